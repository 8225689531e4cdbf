"""Outbound HTTP through aiohttp: a client span per request, and its W3C `traceparent` sent to the upstream."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = TraceContextTextMapPropagator()


def aiohttp_trace_config(tracer: trace.Tracer) -> aiohttp.TraceConfig:
    async def on_start(session: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams) -> None:
        url = params.url
        full = str(url)
        if "?" in full or "@" in full:  # a query string or user info may carry a key
            full = str(url.with_query(None).with_user(None))
        span = tracer.start_span(
            params.method,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": params.method,
                "url.full": full,
                "server.address": url.host or "",
                "server.port": url.port or 0,
            },
        )
        ctx.span = span
        PROPAGATOR.inject(params.headers, context=trace.set_span_in_context(span))

    async def on_end(session: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
        span = getattr(ctx, "span", None)
        if span is None:
            return
        status = params.response.status
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    async def on_exception(session: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestExceptionParams) -> None:
        span = getattr(ctx, "span", None)
        if span is None:
            return
        span.record_exception(params.exception)
        span.set_attribute("error.type", type(params.exception).__name__)
        span.set_status(Status(StatusCode.ERROR, str(params.exception)[:200]))
        span.end()

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)
    config.on_request_end.append(on_end)
    config.on_request_exception.append(on_exception)
    return config
