"""The responses API's HTTP routes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.conversations.routes import parse_items_body, query_of
from lamina.apis.conversations.types import ItemsQuery
from lamina.apis.responses.router import ResponsesRouter
from lamina.apis.responses.types import CreateResponse, ListQuery
from lamina.http import NamedEventStream, json_response, route, router_of, sse_response


def _responses(request: Request) -> ResponsesRouter:
    return router_of(request, ResponsesRouter)


async def create_response(request: Request) -> Response:
    """Create a response (streamed as server-sent events when `stream` is true; queued when `background`)."""
    body = await parse_items_body(request, CreateResponse)
    result = await _responses(request).create(body)
    return json_response(result) if isinstance(result, dict) else await sse_response(result, framing=NamedEventStream)


async def list_responses(request: Request) -> Response:
    """List stored responses (newest first by default; `after` cursor, `limit`, `model`)."""
    return json_response(await _responses(request).list_responses(query_of(request, ListQuery)))


async def get_response(request: Request) -> Response:
    """Retrieve a stored response."""
    return json_response(await _responses(request).retrieve(request.path_params["response_id"]))


async def delete_response(request: Request) -> Response:
    """Delete a stored response."""
    return json_response(await _responses(request).delete(request.path_params["response_id"]))


async def cancel_response(request: Request) -> Response:
    """Cancel a background response."""
    return json_response(await _responses(request).cancel(request.path_params["response_id"]))


async def list_input_items(request: Request) -> Response:
    """List the input items of a stored response (`after` cursor, `limit`, `order`)."""
    query = query_of(request, ItemsQuery)
    return json_response(await _responses(request).input_items(request.path_params["response_id"], query))


ROUTES = [
    route("POST", "/responses", create_response, body=CreateResponse),
    route("GET", "/responses", list_responses, query=ListQuery),
    route("GET", "/responses/{response_id}", get_response),
    route("DELETE", "/responses/{response_id}", delete_response),
    route("POST", "/responses/{response_id}/cancel", cancel_response),
    route("GET", "/responses/{response_id}/input_items", list_input_items, query=ItemsQuery),
]
