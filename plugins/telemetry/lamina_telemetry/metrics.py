"""Prometheus metrics, named like vLLM's `/metrics` where they mean the same (`vllm:` → `lamina:`, with the same
`model_name` label), so dashboards built for vLLM carry over. One registry per observer.

The numbers are kept here as plain per-series values and bucket counts, and become prometheus_client's samples
only when collected (a scrape of `/metrics`, an OTLP push): a request's eight updates through prometheus_client's
metric objects were ~35 Python calls and eight lock round trips; here each is a dict lookup and an addition.
Updates are made on the event loop's thread only (every caller is a coroutine), so they need no lock; a collection
from another thread (the OTLP push) reads numbers at most one update old.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any

import prometheus_client.metrics
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.types import Receive, Scope, Send

# vLLM's buckets for the same histograms.
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
MODEL = ("model_name", "provider")


class Family:
    """One metric's series, by label values (a tuple, in `labelnames` order; str() is applied when collected)."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], registry: Metrics) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.created: dict[tuple[Any, ...], float] = {}
        registry.families.append(self)

    def labels_of(self, key: tuple[Any, ...]) -> dict[str, str]:
        return {name: str(value) for name, value in zip(self.labelnames, key, strict=True)}

    def samples(self, metric: Metric) -> None:
        raise NotImplementedError


class Counter(Family):
    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], registry: Metrics) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self.values: dict[tuple[Any, ...], float] = {}

    def inc(self, key: tuple[Any, ...], amount: float = 1.0) -> None:
        values = self.values
        value = values.get(key)
        if value is None:
            self.created[key] = time.time()
            value = 0.0
        values[key] = value + amount

    def samples(self, metric: Metric) -> None:
        for key, value in list(self.values.items()):
            labels = self.labels_of(key)
            metric.add_sample(self.name + "_total", labels, value)
            if prometheus_client.metrics._use_created:  # PROMETHEUS_DISABLE_CREATED_SERIES, as its metrics read it
                metric.add_sample(self.name + "_created", labels, self.created[key])


class Gauge(Counter):
    kind = "gauge"

    def set(self, key: tuple[Any, ...], value: float) -> None:
        self.values[key] = value

    def samples(self, metric: Metric) -> None:
        if not self.labelnames and not self.values:
            self.values[()] = 0.0  # an unlabelled gauge is there from the start, as prometheus_client's is
        for key, value in list(self.values.items()):
            metric.add_sample(self.name, self.labels_of(key), value)


class Histogram(Family):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        registry: Metrics,
        buckets: tuple[float, ...],
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self.bounds = buckets
        self.les = [floatToGoString(bound) for bound in buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
        # Per series: the sum, then a count per bucket (not cumulative; the last one is +Inf's).
        self.series: dict[tuple[Any, ...], list[float]] = {}

    def observe(self, key: tuple[Any, ...], value: float) -> None:
        series = self.series.get(key)
        if series is None:
            self.created[key] = time.time()
            series = self.series[key] = [0.0] * (len(self.bounds) + 2)
        series[0] += value
        series[1 + bisect_left(self.bounds, value)] += 1  # le: a value equal to a bound is in its bucket

    def samples(self, metric: Metric) -> None:
        for key, series in list(self.series.items()):
            labels = self.labels_of(key)
            series = list(series)
            cumulative = 0.0
            for le, count in zip(self.les, series[1:], strict=True):
                cumulative += count
                metric.add_sample(self.name + "_bucket", {**labels, "le": le}, cumulative)
            metric.add_sample(self.name + "_count", labels, cumulative)
            metric.add_sample(self.name + "_sum", labels, series[0])
            if prometheus_client.metrics._use_created:
                metric.add_sample(self.name + "_created", labels, self.created[key])


class Metrics(Collector):
    def __init__(self) -> None:
        self.families: list[Family] = []
        self.http_requests = Counter(
            "lamina:http_requests", "HTTP requests by route, method, status and provider.",
            ("route", "method", "status", "provider"), self,
        )  # fmt: skip
        self.http_latency = Histogram(
            "lamina:http_request_duration_seconds", "HTTP request latency (to the end of a stream), by route.",
            ("route", "method"), self, HTTP_BUCKETS,
        )  # fmt: skip
        self.e2e_latency = Histogram(
            "lamina:e2e_request_latency_seconds", "Inference request latency, to the last token.",
            MODEL, self, LATENCY_BUCKETS,
        )  # fmt: skip
        self.ttft = Histogram(
            "lamina:time_to_first_token_seconds", "Time to the first streamed chunk.", MODEL, self, TTFT_BUCKETS
        )
        self.tpot = Histogram(
            "lamina:time_per_output_token_seconds", "Time per output token after the first, for streams.",
            MODEL, self, TPOT_BUCKETS,
        )  # fmt: skip
        self.prompt_tokens = Counter("lamina:prompt_tokens", "Prompt tokens processed.", MODEL, self)
        self.generation_tokens = Counter("lamina:generation_tokens", "Generated tokens.", MODEL, self)
        self.success = Counter(
            "lamina:request_success", "Finished inference requests by finish reason.", (*MODEL, "finished_reason"), self
        )
        self.active_streams = Gauge("lamina:active_streams", "Streams being relayed now.", MODEL, self)
        self.provider_latency = Histogram(
            "lamina:provider_call_duration_seconds", "Provider calls (vector search, embeddings, ...), to the answer.",
            ("provider", "operation"), self, HTTP_BUCKETS,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "lamina:upstream_errors", "Provider and upstream failures by kind (the error code, or exception type).",
            ("provider", "kind"), self,
        )  # fmt: skip
        self.tool_calls = Counter(
            "lamina:tool_calls", "Server-side tool calls (tool runtime, MCP) by outcome.", ("provider", "outcome"), self
        )
        self.ingestion_depth = Gauge("lamina:ingestion_queue_depth", "Ingestion jobs queued or running.", (), self)
        self.ingestion_seconds = Histogram(
            "lamina:ingestion_job_duration_seconds", "Vector-store ingestion jobs, by outcome.",
            ("status",), self, JOB_BUCKETS,
        )  # fmt: skip
        self.auth_denials = Counter("lamina:auth_denials", "Requests refused by authentication.", ("reason",), self)
        self.rate_limited = Counter("lamina:rate_limit_hits", "Requests refused by a rate limit.", ("limit",), self)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            metric = Metric(family.name, family.documentation, family.kind)
            family.samples(metric)
            yield metric

    def request(self, route: str, method: str, status: int, provider: str, seconds: float) -> None:
        # Counter.inc and Histogram.observe written out: this runs for every request.
        key: tuple[Any, ...] = (route, method, status, provider)
        counts = self.http_requests.values
        count = counts.get(key)
        if count is None:
            self.http_requests.created[key] = time.time()
            count = 0.0
        counts[key] = count + 1.0
        histogram = self.http_latency
        key = (route, method)
        series = histogram.series.get(key)
        if series is None:
            histogram.observe(key, seconds)
            return
        series[0] += seconds
        series[1 + bisect_left(histogram.bounds, seconds)] += 1

    def record(self, event: str, value: float, attributes: Mapping[str, Any]) -> None:
        """Events from `lamina.observe.record`; an unknown one is ignored (a newer core may send more)."""
        if event == "auth_denied":
            self.auth_denials.inc((attributes.get("reason", ""),), value)
        elif event == "rate_limited":
            self.rate_limited.inc((attributes.get("limit", ""),), value)
        elif event == "ingestion_job":
            self.ingestion_seconds.observe((attributes.get("status", ""),), value)
        elif event == "ingestion_queue_depth":
            self.ingestion_depth.set((), value)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = generate_latest(self.registry)
        headers = [(b"content-type", CONTENT_TYPE_PLAIN_0_0_4.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
