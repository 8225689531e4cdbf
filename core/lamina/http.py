"""Small helpers route handlers share: parse a body, answer JSON, stream server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from lamina import observe
from lamina.errors import LaminaError, bad_request, validation_error
from lamina.providers import ProviderFailed

log = logging.getLogger("lamina")
Model = TypeVar("Model", bound=BaseModel)
R = TypeVar("R")

if TYPE_CHECKING:
    from lamina.resolver import Stack


def dumps(obj: Any) -> bytes:
    # orjson: every answer and every streamed chunk is encoded here, and it is ~15x faster than json.
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        # Data stored before integers were limited to 64 bits at the edge: answered as is, slowly, never a 500.
        return json.dumps(obj, separators=(",", ":")).encode()


JSON_TYPES = ("application/json", "text/json")
OFF_LOOP_BYTES = 256 * 1024  # bodies larger than this are parsed in a worker thread, not on the event loop


async def parse_body(request: Request, model: type[Model]) -> Model:
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media_type = content_type.split(";", 1)[0].strip().lower()
        # A browser can post to any origin without a preflight only as text/plain, a form or multipart: refusing
        # those keeps web pages from driving a server the user runs locally.
        if not (media_type in JSON_TYPES or media_type.endswith("+json")):
            raise LaminaError(
                f"this endpoint takes a JSON body (Content-Type: application/json), not '{media_type}'",
                status=415,
                code="unsupported_media_type",
            )
    body = await request.body()
    if not body:
        raise bad_request("request body is empty; send a JSON object", code="invalid_json")
    if len(body) > OFF_LOOP_BYTES:
        # Parsing megabytes takes tens of milliseconds: in a thread, the loop keeps serving other requests.
        return await asyncio.to_thread(_validate, model, body)
    return _validate(model, body)


DIGITS_AS_ONES = bytes(ord("1") if chr(i).isdigit() and i < 128 else ord("0") for i in range(256))
LONG_RUN = b"1" * 19  # only a run of 19 digits or more can be an integer beyond 64 bits
SCAN_STEP = 256 * 1024
INT64 = range(-(2**63), 2**63)


def _may_hold_long_integers(body: bytes) -> bool:
    """Whether `body` has a run of 19+ digits. A C-speed scan (a regex takes ~50 ms a MB), in slices: every
    scan holds the GIL, and a parse in a worker thread must let the event loop run between slices."""
    for start in range(0, len(body), SCAN_STEP):
        if LONG_RUN in body[start : start + SCAN_STEP + len(LONG_RUN) - 1].translate(DIGITS_AS_ONES):
            return True
    return False


def _check_integers(body: bytes) -> None:
    """Refuse integers that do not fit in 64 bits (in any field, extra fields included): no upstream, encoder or
    store takes them, so kept they fail later, or are stored and fail every later read."""

    def parse_int(digits: str) -> int:
        value = int(digits)
        if value not in INT64:
            raise bad_request(
                f"the integer {digits[:24]}{'...' if len(digits) > 24 else ''} does not fit in 64 bits",
                code="invalid_value",
            )
        return value

    with contextlib.suppress(ValueError):  # not JSON: pydantic says so below, with its position
        json.loads(body, parse_int=parse_int)


def _validate(model: type[Model], body: bytes) -> Model:
    if _may_hold_long_integers(body):
        _check_integers(body)
    try:
        # Strict, for every JSON body alike: `"5"` is not an integer, nor is `5.0`; a string is not a number.
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise bad_request(
                f"request body is not valid JSON: {exc.errors()[0]['msg']}", code="invalid_json"
            ) from None
        raise validation_error(exc) from None


def json_response(obj: Any, status: int = 200) -> Response:
    if isinstance(obj, BaseModel):
        return Response(obj.model_dump_json(), status_code=status, media_type="application/json")
    return Response(dumps(obj), status_code=status, media_type="application/json")


def error_body(exc: LaminaError) -> dict[str, Any]:
    """The error's OpenAI body, with the request's ids (request_id, trace_id) so a report can be found in logs."""
    body = exc.body()
    body["error"].update(observe.error_ids())
    return body


def error_response(exc: LaminaError) -> Response:
    return Response(dumps(error_body(exc)), status_code=exc.status, media_type="application/json", headers=exc.headers)


async def sse_response(events: AsyncIterator[Any], *, framing: type[EventStream] | None = None) -> Response:
    """Stream events as `data: {json}` lines ending with `data: [DONE]` (or as `framing`, an `EventStream`
    subclass, frames them: another wire format's event names, end marker and error event).

    The first event is awaited before the response starts, so a failure before the first byte still gets
    its proper status code instead of a 200 with an error inside the stream.
    """
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await _close(events)
        raise
    return (framing or EventStream)(first, events)


class EventStream(Response):
    """A server-sent-events response that sends each event as it comes and stops when the client leaves.

    Lighter than Starlette's StreamingResponse (no task group per request): this is the hot path of every
    stream. The server only tells us about a disconnect through `receive`, so one small task listens for it
    and cancels the pump, which closes the event iterator and with it any upstream request.

    OpenAI's framing; a subclass changes `encode`, `done` and `error_event` for another wire format.
    """

    done = b"data: [DONE]\n\n"

    @staticmethod
    def encode(event: Any) -> bytes:
        return _event(event)

    @staticmethod
    def error_event(exc: LaminaError) -> Any:
        return error_body(exc)

    def __init__(self, first: Any, events: AsyncIterator[Any]) -> None:
        # No super().__init__(): that would declare a Content-Length for an empty body.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self.first = first
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.current_task()
        assert pump is not None
        disconnected = False

        async def watch() -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected = True
            pump.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if self.first is not None:
                await send({"type": "http.response.body", "body": self.encode(self.first), "more_body": True})
                async for event in self.events:
                    await send({"type": "http.response.body", "body": self.encode(event), "more_body": True})
            await send({"type": "http.response.body", "body": self.done, "more_body": False})
        except asyncio.CancelledError:
            if not disconnected:
                raise
            pump.uncancel()  # the cancellation was ours: the client left, so the stream simply ends
        except LaminaError as exc:
            if not isinstance(exc, ProviderFailed):  # that one was logged, with its traceback, where it was raised
                log.warning("stream ended by error: %s", exc.message)
            await self._finish(send, exc)
        except Exception as exc:
            log.error("stream failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
            await self._finish(send, LaminaError("internal error while streaming", status=500, type="server_error"))
        finally:
            watcher.cancel()
            await _close(self.events)

    async def _finish(self, send: Send, exc: LaminaError) -> None:
        await send({"type": "http.response.body", "body": self.encode(self.error_event(exc)), "more_body": False})


class NamedEventStream(EventStream):
    """Each event preceded by an `event: <its type>` line, as OpenAI's Responses streams are."""

    @staticmethod
    def encode(event: Any) -> bytes:
        kind = event.get("type") if isinstance(event, dict) else None
        return (b"event: " + str(kind).encode() + b"\n" if kind else b"") + _event(event)


def _event(event: Any) -> bytes:
    return b"data: " + dumps(event) + b"\n\n"


async def _close(events: AsyncIterator[Any]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def stack_of(request: Request) -> Stack:
    stack: Stack = request.app.state.stack  # set by `lamina.server.create_app`; Starlette's state is untyped
    return stack


def router_of(request: Request, kind: type[R]) -> R:
    """The router of type `kind` of the stack this request is served by."""
    return stack_of(request).api(kind)


class ApiRoute(Route):
    """A Starlette route carrying what `/v1/openapi.json` needs to describe it: the models of its JSON body, its
    answer and its query string; and `prefix`, what its path is served under."""

    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    prefix: str = "/v1"
    form: type[BaseModel] | None = None  # a multipart body the handler streams itself (uploads): no JSON limit
    error: dict[str, Any] | None = None  # the JSON schema of its error bodies, when not OpenAI's


def route(
    method: str,
    path: str,
    endpoint: Callable[[Request], Awaitable[Response]],
    *,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    prefix: str = "/v1",
    form: type[BaseModel] | None = None,
    error: dict[str, Any] | None = None,
) -> ApiRoute:
    """A route for an `ApiSpec`'s `routes`, described in `/v1/openapi.json` with these models. It is served under
    `prefix` + `path`: `/v1` for OpenAI's routes; Llama Stack has some under `/v1alpha` or `/v1beta`. `form`: the
    body is multipart/form-data with these fields, read by the handler as a stream under its own size limit. `error`:
    the JSON schema of its error bodies, for routes of another vendor's API that answer errors in that API's shape."""
    span_name = f"router {method} {prefix}{path}"

    async def observed(request: Request) -> Response:
        with observe.span(span_name):
            return await endpoint(request)

    functools.update_wrapper(observed, endpoint)
    built = ApiRoute(path, observed, methods=[method])
    built.body, built.response, built.query, built.prefix, built.form = body, response, query, prefix, form
    built.error = error
    return built


def prefix_of(r: object) -> str:
    """What a route of an `ApiSpec` is served under (`/v1` unless it is a `route(..., prefix=...)`)."""
    return r.prefix if isinstance(r, ApiRoute) else "/v1"
