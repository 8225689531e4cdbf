"""The observer installed while a stack runs: an OpenTelemetry tracer provider of its own (not the process-global
one, so two stacks in one process do not fight over it) and a Prometheus registry of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from lamina import observe
from lamina.requestlog import route_of
from lamina.specs import ProviderSpec
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

from lamina_telemetry import TelemetryConfig
from lamina_telemetry.client import ClientSpan
from lamina_telemetry.metrics import Metrics
from lamina_telemetry.providers import InstrumentedProvider
from lamina_telemetry.tracing import CURRENT, SPAN_KEY, LeanSpan, LeanTracer, Preset, SpanRecorder, otlp_poster

log = logging.getLogger("lamina.telemetry")
PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = {b"traceparent": "traceparent", b"tracestate": "tracestate"}


class CurrentSpan:
    """A child span made current for a `with` block: `start_as_current_span` without its generator machinery."""

    __slots__ = ("attributes", "name", "span", "token", "tracer")

    def __init__(self, tracer: LeanTracer, name: str, attributes: Mapping[str, Any]) -> None:
        self.tracer, self.name, self.attributes = tracer, name, attributes

    def __enter__(self) -> trace.Span:
        self.span, self.token = self.tracer.enter(self.name, SpanKind.INTERNAL, dict(self.attributes))
        return self.span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: Any) -> None:
        CURRENT.reset(self.token)
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
        self.span.end()


class Telemetry(observe.Observer):
    def __init__(self, settings: TelemetryConfig, traces_endpoint: str | None, metrics_endpoint: str | None) -> None:
        self.settings = settings
        self.config: object = None  # the run config of the stack it was made for
        self.metrics = Metrics() if settings.metrics else None
        self.spans: SpanRecorder | None = None
        self.tracer: LeanTracer | None = None
        self.pusher: Any = None
        attributes: dict[str, Any] = {}
        if settings.service_name or not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = settings.service_name or "lamina"
        resource = Resource.create(attributes)  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME merged in
        if traces_endpoint is not None:
            ratio = settings.sampling_ratio
            if ratio is None:  # the SDK's own reading of OTEL_TRACES_SAMPLER(_ARG), default always on
                sampler = TracerProvider(shutdown_on_exit=False).sampler
            else:
                sampler = ParentBased(TraceIdRatioBased(ratio))
            self.spans = SpanRecorder(resource, otlp_poster(traces_endpoint, settings.otlp_headers or None))
            self.tracer = LeanTracer(sampler, self.spans)
            log.info("telemetry: traces to %s", traces_endpoint)
        if self.metrics is not None:
            log.info("telemetry: Prometheus metrics on %s", settings.metrics_path)
            if metrics_endpoint is not None:
                from lamina_telemetry.otlp_metrics import MetricsPusher

                interval = settings.export_interval_seconds
                if interval is None:
                    interval = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "60000")) / 1000
                self.pusher = MetricsPusher(
                    self.metrics.registry, resource, metrics_endpoint, settings.otlp_headers, interval
                )
                log.info("telemetry: metrics to %s every %gs", metrics_endpoint, interval)

    # -- the seams core calls

    def span(self, name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Any]:
        if self.tracer is None:
            return observe.NO_SPAN
        return CurrentSpan(self.tracer, name, attributes)

    def record(self, event: str, value: float, attributes: Mapping[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.record(event, value, attributes)

    def trace_id(self) -> str | None:
        if self.tracer is None:
            return None
        span = CURRENT.get().get(SPAN_KEY)
        if type(span) is LeanSpan:
            return format(span.trace_id, "032x")
        span_context = trace.get_current_span().get_span_context()
        return format(span_context.trace_id, "032x") if span_context.is_valid else None

    def outbound(self, method: str, url: str, headers: dict[str, str]) -> AbstractContextManager[Any]:
        if self.tracer is None:
            return observe.NOT_OBSERVED
        return ClientSpan(self.tracer, method, url, headers)

    def propagation_headers(self) -> dict[str, str]:
        if self.tracer is None:
            return {}
        headers: dict[str, str] = {}
        PROPAGATOR.inject(headers)
        return headers

    def wrap_provider(self, instance: Any, provider_id: str, spec: ProviderSpec) -> Any:
        return InstrumentedProvider(instance, provider_id, spec, self.tracer, self.metrics)

    async def close(self) -> None:
        if self.spans is not None:
            await asyncio.to_thread(self.spans.shutdown)  # exports what is left
        if self.pusher is not None:
            await asyncio.to_thread(self.pusher.stop)

    # -- the server span, request metrics and /metrics

    def asgi_wrapper(self, app: ASGIApp) -> ASGIApp:
        metrics_path = self.settings.metrics_path if self.metrics is not None else None
        tracer, metrics = self.tracer, self.metrics
        presets: dict[tuple[str, str], Preset] = {}  # the server span's first attributes, by method and path

        async def served(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            if scope["path"] == metrics_path and metrics is not None:
                await metrics.serve(scope, receive, send)
                return
            started = time.perf_counter()
            span = None
            token = None
            if tracer is not None:
                carrier = {}
                for name, value in scope["headers"]:
                    if name in TRACE_HEADERS:
                        carrier[TRACE_HEADERS[name]] = value.decode("latin-1")
                current = CURRENT.get()
                method, path = scope["method"], scope["path"]
                preset = presets.get((method, path))
                if preset is None:
                    if len(presets) >= 1024:  # paths with ids in them: kept while they recur
                        presets.clear()
                    preset = presets[method, path] = Preset({"http.request.method": method, "url.path": path})
                span = tracer.start(
                    method, SpanKind.SERVER, {}, PROPAGATOR.extract(carrier) if carrier else current, preset
                )
                token = CURRENT.set(Context({**current, SPAN_KEY: span}))
            try:
                await app(scope, receive, send)  # core's request-id middleware inside notes the status
            except BaseException as exc:
                if span is not None:
                    span.record_exception(exc)
                raise
            finally:
                info = observe.current_request()
                route = info.route if info is not None and info.route else route_of(scope) or "unmatched"
                provider = (info.provider if info is not None else None) or ""
                status = info.status if info is not None and info.status else 500  # 0: it failed before answering
                if token is not None:
                    CURRENT.reset(token)
                if type(span) is LeanSpan and span.end_ns == 0:  # else not recorded: nothing to say
                    span.name = f"{scope['method']} {route}"
                    attributes = span.attributes
                    attributes["http.route"] = route
                    attributes["http.response.status_code"] = status
                    if info is not None:
                        attributes["lamina.request_id"] = info.request_id
                    if provider:
                        attributes["lamina.provider.id"] = provider
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                    span.end()
                if metrics is not None:
                    metrics.request(route, scope["method"], status, provider, time.perf_counter() - started)

        return served
