"""Small helpers route handlers share: parse a body, answer JSON, stream server-sent events."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lamina.errors import LaminaError, bad_request, validation_error

log = logging.getLogger("lamina")
Model = TypeVar("Model", bound=BaseModel)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


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


async def sse_response(events: AsyncIterator[Any]) -> Response:
    """Stream events as `data: {json}` lines ending with `data: [DONE]`.

    The first event is awaited before the response starts, so a failure before the first byte still gets
    its proper status code instead of a 200 with an error inside the stream.
    """
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = None

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield b"data: " + dumps(first) + b"\n\n"
                async for event in events:
                    yield b"data: " + dumps(event) + b"\n\n"
            yield b"data: [DONE]\n\n"
        except LaminaError as exc:
            log.warning("stream ended by error: %s", exc.message)
            yield b"data: " + dumps(exc.body()) + b"\n\n"
        except Exception:
            log.exception("stream failed")
            yield (
                b"data: "
                + dumps(LaminaError("internal error while streaming", status=500, type="server_error").body())
                + b"\n\n"
            )
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def stack_of(request: Request) -> Any:
    return request.app.state.stack


def route(
    method: str,
    path: str,
    endpoint: Any,
    *,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
) -> Any:
    """A Starlette route carrying what `/v1/openapi.json` needs to describe it."""
    from starlette.routing import Route

    built = Route(path, endpoint, methods=[method])
    built.openapi = {"body": body, "response": response, "query": query, "summary": (endpoint.__doc__ or "").strip()}  # type: ignore[attr-defined]
    return built
