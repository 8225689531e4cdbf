"""Outbound HTTP (`observe.outbound`): a client span per request, and its W3C `traceparent` sent to the upstream.

The adapters call this around their request rather than handing aiohttp a `TraceConfig`: with any trace config,
aiohttp builds a `Trace` and a params object and awaits a signal at each step of every request (connection
reuse, headers sent, each chunk sent and received, end), which cost more than the span itself.
"""

from __future__ import annotations

import functools
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from yarl import URL

from lamina_telemetry.tracing import EMPTY_STATE, LeanSpan, LeanTracer, Preset

PROPAGATOR = TraceContextTextMapPropagator()


@functools.lru_cache(maxsize=256)  # an adapter calls a handful of URLs: parsed once each
def request_attributes(method: str, url: str) -> Preset:
    parsed = URL(url)
    full = url
    if parsed.query_string or parsed.user is not None:  # a query string or user info may carry a key
        full = str(parsed.with_query(None).with_user(None))
    return Preset(
        {
            "http.request.method": method,
            "url.full": full,
            "server.address": parsed.host or "",
            "server.port": parsed.port or 0,
        }
    )


class ClientSpan:
    """The span of one outbound request; `with` it, call it with the answer's status."""

    __slots__ = ("span",)

    def __init__(self, tracer: LeanTracer, method: str, url: str, headers: dict[str, str]) -> None:
        span = self.span = tracer.start(method, SpanKind.CLIENT, {}, None, request_attributes(method, url))
        if type(span) is LeanSpan:  # the W3C header, as the propagator writes it for a sampled span
            headers["traceparent"] = f"00-{span.trace_id:032x}-{span.span_id:016x}-01"
            if span.trace_state is not EMPTY_STATE and span.trace_state:  # (a Python __len__ otherwise)
                headers["tracestate"] = span.trace_state.to_header()
        else:
            PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))

    def __enter__(self) -> ClientSpan:
        return self

    def __call__(self, status: int) -> None:
        span = self.span
        if type(span) is LeanSpan and span.end_ns == 0:
            span.attributes["http.response.status_code"] = status
        if status >= 400:
            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: Any) -> None:
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_attribute("error.type", type(exc).__name__)
            self.span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
        self.span.end()
