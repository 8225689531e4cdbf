"""The conversations API's HTTP routes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.conversations.router import ConversationsRouter
from lamina.apis.conversations.types import CreateConversation, CreateItems, ItemsQuery, UpdateConversation
from lamina.errors import validation_error
from lamina.http import json_response, parse_body, route, router_of


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
    body = await parse_body(request, CreateConversation)
    return json_response(await _conversations(request).create(body))


async def get_conversation(request: Request) -> Response:
    """Retrieve a conversation."""
    return json_response(await _conversations(request).retrieve(request.path_params["conversation_id"]))


async def update_conversation(request: Request) -> Response:
    """Replace a conversation's metadata."""
    body = await parse_body(request, UpdateConversation)
    return json_response(await _conversations(request).update(request.path_params["conversation_id"], body))


async def delete_conversation(request: Request) -> Response:
    """Delete a conversation and its items."""
    return json_response(await _conversations(request).delete(request.path_params["conversation_id"]))


async def create_items(request: Request) -> Response:
    """Append items to a conversation."""
    body = await parse_body(request, CreateItems)
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
