"""The HTTP routes of Anthropic's Messages API, mounted under /v1. Every answer, errors included, is in
Anthropic's shape: `{"type": "error", "error": {"type": ..., "message": ...}}` and `event:`-named stream events."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from lamina import LaminaError
from lamina.http import EventStream, dumps, json_response, parse_body, route, router_of, sse_response
from starlette.requests import Request
from starlette.responses import Response

from lamina_anthropic_messages.router import MessagesRouter
from lamina_anthropic_messages.types import CountTokensRequest, MessagesRequest

log = logging.getLogger("lamina")

# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# Anthropic's error body, as /v1/openapi.json declares it for these routes.
ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}


def anthropic_error(exc: LaminaError) -> dict[str, Any]:
    kind = ERROR_TYPES.get(exc.status) or ("invalid_request_error" if exc.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


class AnthropicEventStream(EventStream):
    """Anthropic's framing: `event: <type>` before each event's data, no end marker, errors as an `error` event."""

    done = b""

    @staticmethod
    def encode(event: Any) -> bytes:
        return b"event: " + event["type"].encode() + b"\ndata: " + dumps(event) + b"\n\n"

    @staticmethod
    def error_event(exc: LaminaError) -> Any:
        return anthropic_error(exc)


def anthropic_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Answer the handler's errors in Anthropic's shape instead of OpenAI's (the server's default)."""

    @functools.wraps(handler)
    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except LaminaError as exc:
            return json_response(anthropic_error(exc), status=exc.status)
        except Exception as exc:
            log.error("unhandled error on %s: %s: %s", request.url.path, type(exc).__name__, exc, exc_info=exc)
            return json_response(anthropic_error(LaminaError("internal server error", status=500)), status=500)

    return handle


@anthropic_errors
async def create_message(request: Request) -> Response:
    """Create a message (Anthropic's Messages API), served by any inference provider through chat completions."""
    body = await parse_body(request, MessagesRequest)
    result = await router_of(request, MessagesRouter).create(body)
    if isinstance(result, dict):
        return json_response(result)
    return await sse_response(result, framing=AnthropicEventStream)


@anthropic_errors
async def count_tokens(request: Request) -> Response:
    """Count the input tokens of a Messages request, as its model's provider counts them."""
    body = await parse_body(request, CountTokensRequest)
    return json_response(await router_of(request, MessagesRouter).count_tokens(body))


ROUTES = [
    route("POST", "/messages", create_message, body=MessagesRequest, error=ANTHROPIC_ERROR),
    route("POST", "/messages/count_tokens", count_tokens, body=CountTokensRequest, error=ANTHROPIC_ERROR),
]
