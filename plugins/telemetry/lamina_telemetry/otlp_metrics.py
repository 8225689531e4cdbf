"""Metrics over OTLP: the Prometheus registry's samples, converted to OTLP's data model and pushed every interval.

The registry stays the one place metrics are kept (it is what `/metrics` serves, with vLLM's names, which OTel
instrument names cannot spell: no `:`), so recording costs the same whether or not OTLP export is on.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

log = logging.getLogger("lamina.telemetry")
CUMULATIVE = AggregationTemporality.CUMULATIVE
SCOPE = InstrumentationScope("lamina")


def labels_of(sample: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))


def convert(registry: CollectorRegistry, resource: Resource, start: int) -> MetricsData:
    now = time.time_ns()
    metrics: list[Metric] = []
    for family in registry.collect():
        if family.type in ("counter", "gauge"):
            points = [
                NumberDataPoint(dict(labels_of(s)), start, now, s.value)
                for s in family.samples
                if s.name == family.name + ("_total" if family.type == "counter" else "")
            ]
            if not points:
                continue
            data: Any = Sum(points, CUMULATIVE, is_monotonic=True) if family.type == "counter" else Gauge(points)
        elif family.type == "histogram":
            series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
            for s in family.samples:
                entry = series.setdefault(labels_of(s), {"buckets": [], "count": 0, "sum": 0.0})
                if s.name.endswith("_bucket"):
                    entry["buckets"].append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    entry["count"] = int(s.value)
                elif s.name.endswith("_sum"):
                    entry["sum"] = s.value
            histogram_points = []
            for labels, entry in series.items():
                cumulative = sorted(entry["buckets"])
                counts = [int(c - (cumulative[i - 1][1] if i else 0)) for i, (_, c) in enumerate(cumulative)]
                bounds = [le for le, _ in cumulative if le != float("inf")]
                histogram_points.append(
                    HistogramDataPoint(
                        dict(labels),
                        start,
                        now,
                        entry["count"],
                        entry["sum"],
                        counts,
                        bounds,
                        min=float("nan"),
                        max=float("nan"),
                    )
                )
            if not histogram_points:
                continue
            data = Histogram(histogram_points, CUMULATIVE)
        else:
            continue
        metrics.append(Metric(family.name, family.documentation, family.unit or None, data))
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(SCOPE, metrics, "")], "")])


class MetricsPusher:
    """A daemon thread pushing the registry every `interval` seconds, and once more when stopped."""

    def __init__(
        self, registry: CollectorRegistry, resource: Resource, endpoint: str, headers: dict[str, str], interval: float
    ) -> None:
        self.registry = registry
        self.resource = resource
        self.exporter = OTLPMetricExporter(endpoint=endpoint, headers=headers or None)
        self.interval = interval
        self.start = time.time_ns()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lamina-otlp-metrics", daemon=True)
        self.thread.start()

    def push(self) -> None:
        try:
            self.exporter.export(convert(self.registry, self.resource, self.start))
        except Exception as exc:  # an unreachable collector must not take anything else down
            log.warning("telemetry: pushing metrics failed: %s: %s", type(exc).__name__, exc)

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.push()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.push()
        self.exporter.shutdown()
