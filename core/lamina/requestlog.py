"""Request ids and the one log line per request: `X-Request-ID` accepted and returned, and a `lamina.request`
record (route, status, duration, provider, model, tokens) when that logger is enabled for INFO.

`lamina run --log-format json` makes every record one JSON object per line (`JsonFormatter`); records logged
while a request is served carry its request id (and trace id, with an observability plugin).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lamina import observe

request_log = logging.getLogger("lamina.request")


def route_of(scope: Scope) -> str | None:
    """The matched route's template (low cardinality, unlike the path), with its mount's prefix."""
    route = scope.get("route")
    if not isinstance(route, BaseRoute):
        return None
    path: str | None = getattr(route, "path", None)
    if path is None:
        return None
    root: str = scope.get("root_path", "")
    app_root: str = scope.get("app_root_path", "")
    prefix = root[len(app_root) :] if root.startswith(app_root) else root
    return prefix + path


def with_request_ids(app: ASGIApp) -> ASGIApp:
    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        requested = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                requested = value.decode("latin-1")
                break
        info = observe.begin_request(scope["method"], scope["path"], requested)
        header = (b"x-request-id", info.request_id.encode())
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            info.route = route_of(scope)
            if request_log.isEnabledFor(logging.INFO):
                log_request(info, time.perf_counter() - started)

    return served


def log_request(info: observe.RequestInfo, seconds: float) -> None:
    fields = {
        "request_id": info.request_id,
        "trace_id": observe.trace_id(),
        "method": info.method,
        "route": info.route or info.path,
        "status": info.status,
        "duration_ms": round(seconds * 1000, 2),
        "provider": info.provider,
        "model": info.model,
        "input_tokens": info.input_tokens,
        "output_tokens": info.output_tokens,
    }
    request_log.info("%s %s %d %.1fms", info.method, info.path, info.status, seconds * 1000, extra={"request": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the request's fields and ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "request", None)
        if isinstance(fields, dict):
            entry.update({key: value for key, value in fields.items() if value is not None})
        else:
            info = observe.current_request()
            if info is not None:
                entry["request_id"] = info.request_id
                trace = observe.trace_id()
                if trace is not None:
                    entry["trace_id"] = trace
        worker = getattr(record, "worker", None)  # `lamina run --workers N`: which one wrote it
        if worker is not None:
            entry["worker"] = worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()
