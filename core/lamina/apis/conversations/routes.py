"""The conversations API's HTTP routes."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.conversations.router import ConversationsRouter
from lamina.apis.conversations.types import CreateConversation, CreateItems, ItemsQuery, UpdateConversation
from lamina.errors import bad_request, validation_error
from lamina.http import json_response, route, router_of

Model = TypeVar("Model", bound=BaseModel)


def _clean(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # Pydantic names the union member it tried in the location: `input.list[...].0.function_call.call_id`.
    # A client knows the field as `input.0.call_id`: drop a member label (after a list index) and type labels.
    kept: list[Any] = []
    for part in loc:
        if isinstance(part, str) and ("[" in part or part in ("str", "dict[str,any]")):
            continue
        if isinstance(part, str) and kept and isinstance(kept[-1], int) and part in UNION_TAGS:
            continue
        kept.append(part)
    return tuple(kept)


UNION_TAGS = frozenset(
    {
        "message",
        "function_call",
        "function_call_output",
        "file_search_call",
        "mcp_call",
        "item_reference",
        "other",
        "function",
        "file_search",
        "hosted",
        "text",
    }
)


async def parse_items_body(request: Request, model: type[Model]) -> Model:
    """`parse_body` for bodies holding Responses items and tools: a 400 names the field as the client knows it
    (`input.0.call_id`), not as pydantic walked the unions."""
    body = await request.body()
    if not body:
        raise bad_request("request body is empty; send a JSON object", code="invalid_json")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors[0]["type"] == "json_invalid":
            raise bad_request(f"request body is not valid JSON: {errors[0]['msg']}", code="invalid_json") from None
        # A list given where `str | list` is allowed also fails as a string: that error says nothing useful.
        useful = [e for e in errors if not (len(e["loc"]) == 2 and e["loc"][1] == "str")] or errors
        first = useful[0]
        param = ".".join(str(part) for part in _clean(tuple(first["loc"]))) or None
        message = first["msg"] if param is None else f"{param}: {first['msg']}"
        if len(useful) > 1:
            message += f" (and {len(useful) - 1} more error(s))"
        code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
        raise bad_request(message, param=param, code=code) from None


def _conversations(request: Request) -> ConversationsRouter:
    return router_of(request, ConversationsRouter)


def query_of(request: Request, model: type[BaseModel]) -> Any:
    params: dict[str, Any] = dict(request.query_params)
    for name, field in model.model_fields.items():
        if "list" in str(field.annotation) and name in request.query_params:
            params[name] = request.query_params.getlist(name)
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def create_conversation(request: Request) -> Response:
    """Create a conversation, optionally with its first items."""
    body = await parse_items_body(request, CreateConversation)
    return json_response(await _conversations(request).create(body))


async def get_conversation(request: Request) -> Response:
    """Retrieve a conversation."""
    return json_response(await _conversations(request).retrieve(request.path_params["conversation_id"]))


async def update_conversation(request: Request) -> Response:
    """Replace a conversation's metadata."""
    body = await parse_items_body(request, UpdateConversation)
    return json_response(await _conversations(request).update(request.path_params["conversation_id"], body))


async def delete_conversation(request: Request) -> Response:
    """Delete a conversation and its items."""
    return json_response(await _conversations(request).delete(request.path_params["conversation_id"]))


async def create_items(request: Request) -> Response:
    """Append items to a conversation."""
    body = await parse_items_body(request, CreateItems)
    return json_response(await _conversations(request).create_items(request.path_params["conversation_id"], body))


async def list_items(request: Request) -> Response:
    """List a conversation's items (newest first by default; `after` cursor, `limit`)."""
    query = query_of(request, ItemsQuery)
    return json_response(await _conversations(request).list_items(request.path_params["conversation_id"], query))


async def get_item(request: Request) -> Response:
    """Retrieve one item of a conversation."""
    params = request.path_params
    return json_response(await _conversations(request).retrieve_item(params["conversation_id"], params["item_id"]))


async def delete_item(request: Request) -> Response:
    """Delete one item of a conversation; answers with the conversation."""
    params = request.path_params
    return json_response(await _conversations(request).delete_item(params["conversation_id"], params["item_id"]))


ROUTES = [
    route("POST", "/conversations", create_conversation, body=CreateConversation),
    route("GET", "/conversations/{conversation_id}", get_conversation),
    route("POST", "/conversations/{conversation_id}", update_conversation, body=UpdateConversation),
    route("DELETE", "/conversations/{conversation_id}", delete_conversation),
    route("POST", "/conversations/{conversation_id}/items", create_items, body=CreateItems),
    route("GET", "/conversations/{conversation_id}/items", list_items, query=ItemsQuery),
    route("GET", "/conversations/{conversation_id}/items/{item_id}", get_item),
    route("DELETE", "/conversations/{conversation_id}/items/{item_id}", delete_item),
]
