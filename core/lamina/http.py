"""Small helpers route handlers share: parse a body, answer JSON, stream server-sent events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from lamina.errors import LaminaError, bad_request, validation_error
from lamina.providers import ProviderFailed

log = logging.getLogger("lamina")
Model = TypeVar("Model", bound=BaseModel)
R = TypeVar("R")

if TYPE_CHECKING:
    from lamina.resolver import Stack


def dumps(obj: Any) -> bytes:
    # orjson: every answer and every streamed chunk is encoded here, and it is ~15x faster than json.
    return orjson.dumps(obj)


async def parse_body(request: Request, model: type[Model]) -> Model:
    body = await request.body()
    if not body:
        raise bad_request("request body is empty; send a JSON object", code="invalid_json")
    try:
        return model.model_validate_json(body)
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


def error_response(exc: LaminaError) -> Response:
    return Response(dumps(exc.body()), status_code=exc.status, media_type="application/json")


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
        return exc.body()

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


def route(
    method: str,
    path: str,
    endpoint: Callable[[Request], Awaitable[Response]],
    *,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    prefix: str = "/v1",
) -> ApiRoute:
    """A route for an `ApiSpec`'s `routes`, described in `/v1/openapi.json` with these models. It is served under
    `prefix` + `path`: `/v1` for OpenAI's routes; Llama Stack has some under `/v1alpha` or `/v1beta`."""
    built = ApiRoute(path, endpoint, methods=[method])
    built.body, built.response, built.query, built.prefix = body, response, query, prefix
    return built


def prefix_of(r: object) -> str:
    """What a route of an `ApiSpec` is served under (`/v1` unless it is a `route(..., prefix=...)`)."""
    return r.prefix if isinstance(r, ApiRoute) else "/v1"
