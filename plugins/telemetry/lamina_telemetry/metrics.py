"""Prometheus metrics, named like vLLM's `/metrics` where they mean the same (`vllm:` → `lamina:`, with the same
`model_name` label), so dashboards built for vLLM carry over. One registry per observer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from starlette.types import Receive, Scope, Send

# vLLM's buckets for the same histograms.
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
MODEL = ("model_name", "provider")


class Metrics:
    def __init__(self) -> None:
        # A metric's child per label values: `labels()` costs ~5 us a call, a dict lookup a tenth of that.
        self.children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "lamina:http_requests", "HTTP requests by route, method, status and provider.",
            ("route", "method", "status", "provider"), registry=r,
        )  # fmt: skip
        self.http_latency = Histogram(
            "lamina:http_request_duration_seconds", "HTTP request latency (to the end of a stream), by route.",
            ("route", "method"), buckets=HTTP_BUCKETS, registry=r,
        )  # fmt: skip
        self.e2e_latency = Histogram(
            "lamina:e2e_request_latency_seconds", "Inference request latency, to the last token.",
            MODEL, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "lamina:time_to_first_token_seconds", "Time to the first streamed chunk.",
            MODEL, buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.tpot = Histogram(
            "lamina:time_per_output_token_seconds", "Time per output token after the first, for streams.",
            MODEL, buckets=TPOT_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter("lamina:prompt_tokens", "Prompt tokens processed.", MODEL, registry=r)
        self.generation_tokens = Counter("lamina:generation_tokens", "Generated tokens.", MODEL, registry=r)
        self.success = Counter(
            "lamina:request_success", "Finished inference requests by finish reason.",
            (*MODEL, "finished_reason"), registry=r,
        )  # fmt: skip
        self.active_streams = Gauge(
            "lamina:active_streams", "Streams being relayed now.", MODEL, registry=r, multiprocess_mode="livesum"
        )
        self.provider_latency = Histogram(
            "lamina:provider_call_duration_seconds", "Provider calls (vector search, embeddings, ...), to the answer.",
            ("provider", "operation"), buckets=HTTP_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "lamina:upstream_errors", "Provider and upstream failures by kind (the error code, or exception type).",
            ("provider", "kind"), registry=r,
        )  # fmt: skip
        self.tool_calls = Counter(
            "lamina:tool_calls", "Server-side tool calls (tool runtime, MCP) by outcome.",
            ("provider", "outcome"), registry=r,
        )  # fmt: skip
        self.ingestion_depth = Gauge("lamina:ingestion_queue_depth", "Ingestion jobs queued or running.", registry=r)
        self.ingestion_seconds = Histogram(
            "lamina:ingestion_job_duration_seconds", "Vector-store ingestion jobs, by outcome.",
            ("status",), buckets=JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self.auth_denials = Counter(
            "lamina:auth_denials", "Requests refused by authentication.", ("reason",), registry=r
        )
        self.rate_limited = Counter(
            "lamina:rate_limit_hits", "Requests refused by a rate limit.", ("limit",), registry=r
        )

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*labels)
        return found

    def model_children(self, model: str, provider: str) -> tuple[Any, Any, Any]:
        """A model's latency histogram and token counters, for every finished inference call: one lookup."""
        key = (0, (model, provider))
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = (
                self.e2e_latency.labels(model, provider),
                self.prompt_tokens.labels(model, provider),
                self.generation_tokens.labels(model, provider),
            )
        return found  # type: ignore[no-any-return]

    def request(self, route: str, method: str, status: int, provider: str, seconds: float) -> None:
        self.child(self.http_requests, route, method, str(status), provider).inc()
        self.child(self.http_latency, route, method).observe(seconds)

    def record(self, event: str, value: float, attributes: Mapping[str, Any]) -> None:
        """Events from `lamina.observe.record`; an unknown one is ignored (a newer core may send more)."""
        if event == "auth_denied":
            self.auth_denials.labels(str(attributes.get("reason", ""))).inc(value)
        elif event == "rate_limited":
            self.rate_limited.labels(str(attributes.get("limit", ""))).inc(value)
        elif event == "ingestion_job":
            self.ingestion_seconds.labels(str(attributes.get("status", ""))).observe(value)
        elif event == "ingestion_queue_depth":
            self.ingestion_depth.set(value)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = generate_latest(self.registry)
        headers = [(b"content-type", CONTENT_TYPE_PLAIN_0_0_4.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
