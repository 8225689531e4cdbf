"""Where observability plugs in: the seams core and plugins call, and the request id every request carries.

Core has no tracing or metrics library. A plugin implementing the `observer(config)` hook returns an `Observer`;
the resolver installs it for as long as the stack runs. Until then every function here costs one global lookup:

    with observe.span("execute_tool get_weather", {"gen_ai.tool.name": "get_weather"}):   # a child span
        ...
    observe.record("auth_denied", reason="bad_key")         # count an event (metrics)
    extra = {}                                              # an outbound HTTP request: a client span, whose
    with observe.outbound("POST", url, extra) as answered:  # traceparent the observer puts in `extra`
        response = await session.post(url, data=body, headers=extra or None)
        answered(response.status)                           # when the answer's headers are in
    headers = {**observe.propagation_headers(), **headers}  # a client it cannot hook: at least the traceparent

Span names core and first-party plugins use (an observer may rename or drop them):
  `router <METHOD> <path>` around each API handler, `ingestion_job` around a vector-store file's ingestion.
  Provider calls are spans through `wrap_provider`: lamina-telemetry names a tool runtime's `invoke_tool`
  `execute_tool <tool name>` (GenAI conventions, `gen_ai.tool.name`) and an MCP provider's listing
  `mcp tools/list`; a tool called some other way should open the same spans here.
Events (`record`) with their attributes:
  `auth_denied` (reason), `rate_limited` (limit), `ingestion_job` (value: seconds; status),
  `ingestion_queue_depth` (value: jobs waiting).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamina.specs import ProviderSpec

NO_SPAN: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()  # reusable: it keeps no state
EMPTY: Mapping[str, Any] = {}


def _ignore_status(status: int) -> None:
    pass


NOT_OBSERVED: contextlib.AbstractContextManager[Callable[[int], None]] = contextlib.nullcontext(_ignore_status)


class Observer:
    """What an observability plugin implements; every method here does nothing, so a subclass overrides what
    it uses. Methods other than `wrap_provider`/`close` run per request: keep them cheap."""

    def span(self, name: str, attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
        """A context manager timing a child span of the current one."""
        return NO_SPAN

    def record(self, event: str, value: float, attributes: Mapping[str, Any]) -> None:
        """Count (or measure, with `value`) something that happened; see the module's list of events."""

    def trace_id(self) -> str | None:
        """The current trace's id (32 hex digits), for log lines and error bodies."""
        return None

    def outbound(
        self, method: str, url: str, headers: dict[str, str]
    ) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """A context manager around one outbound HTTP request, up to its answer's headers (a client span): it may
        add headers carrying the trace (`traceparent`) to `headers`, which the caller sends; it yields a function
        the caller calls with the answer's status. An exception leaving the block is the request's failure."""
        return NOT_OBSERVED

    def propagation_headers(self) -> dict[str, str]:
        """Headers carrying the current trace to a server called now (W3C `traceparent`, `tracestate`)."""
        return {}

    def wrap_provider(self, instance: Any, provider_id: str, spec: ProviderSpec) -> Any:
        """A started provider instance, or a wrapper of it, for its router (called once per provider)."""
        return instance

    async def close(self) -> None:
        """Flush and stop exporting; called when the stack closes."""


_observer: Observer | None = None


def install(observer: Observer | None) -> Observer | None:
    """Make `observer` the process's observer (None: none); returns the previous one."""
    global _observer
    previous, _observer = _observer, observer
    return previous


def current() -> Observer | None:
    return _observer


def span(name: str, attributes: Mapping[str, Any] = EMPTY) -> contextlib.AbstractContextManager[Any]:
    observer = _observer
    return NO_SPAN if observer is None else observer.span(name, attributes)


def record(event: str, value: float = 1.0, **attributes: Any) -> None:
    observer = _observer
    if observer is not None:
        observer.record(event, value, attributes)


def trace_id() -> str | None:
    observer = _observer
    return None if observer is None else observer.trace_id()


def outbound(
    method: str, url: str, headers: dict[str, str]
) -> contextlib.AbstractContextManager[Callable[[int], None]]:
    observer = _observer
    return NOT_OBSERVED if observer is None else observer.outbound(method, url, headers)


def propagation_headers() -> dict[str, str]:
    observer = _observer
    return {} if observer is None else observer.propagation_headers()


def wrap_provider(instance: Any, provider_id: str, spec: ProviderSpec) -> Any:
    observer = _observer
    return instance if observer is None else observer.wrap_provider(instance, provider_id, spec)


# -- the request being served


@dataclass(slots=True)
class RequestInfo:
    """What one request's log line and metrics say about it; filled in as the request goes through the stack."""

    request_id: str
    method: str
    path: str
    route: str | None = None  # the route's template, e.g. /v1/vector_stores/{store_id}
    provider: str | None = None  # the last provider id a router called for it
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    status: int = 0


_request: ContextVar[RequestInfo | None] = ContextVar("lamina_request", default=None)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def current_request() -> RequestInfo | None:
    return _request.get()


def begin_request(method: str, path: str, requested_id: str | None) -> RequestInfo:
    """Start a request's record: the client's `X-Request-ID` when it is a sane token, else a new id."""
    request_id = requested_id if requested_id and REQUEST_ID.match(requested_id) else uuid.uuid4().hex
    info = RequestInfo(request_id, method, path)
    _request.set(info)
    return info


def note_usage(result: Mapping[str, Any]) -> None:
    """Take the model and token counts from an OpenAI-shaped answer (or a stream's usage chunk)."""
    info = _request.get()
    if info is None:
        return
    model = result.get("model")
    if isinstance(model, str):
        info.model = model
    usage = result.get("usage")
    if isinstance(usage, dict):
        info.input_tokens = usage.get("prompt_tokens", info.input_tokens)
        info.output_tokens = usage.get("completion_tokens", info.output_tokens)


def error_ids() -> dict[str, str]:
    """The ids that go into an error body, so a user's report can be found in the logs."""
    ids: dict[str, str] = {}
    info = _request.get()
    if info is not None:
        ids["request_id"] = info.request_id
    trace = trace_id()
    if trace is not None:
        ids["trace_id"] = trace
    return ids
