"""The inference API's HTTP routes: thin handlers that parse, call the router, and answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.inference.router import InferenceRouter
from lamina.apis.inference.stored import (
    CompletionDeleted,
    CompletionList,
    ListCompletionsQuery,
    ListMessagesQuery,
    StoredCompletions,
    UpdateCompletion,
)
from lamina.apis.inference.types import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    Model,
    ModelDeleted,
    ModelList,
    RegisterModel,
)
from lamina.errors import validation_error
from lamina.http import json_response, parse_body, route, router_of, sse_response

Q = TypeVar("Q", bound=BaseModel)


def _inference(request: Request) -> InferenceRouter:
    return router_of(request, InferenceRouter)


async def _respond(result: dict[str, Any] | AsyncIterator[dict[str, Any]]) -> Response:
    return json_response(result) if isinstance(result, dict) else await sse_response(result)


async def create_chat_completion(request: Request) -> Response:
    """Create a chat completion (streamed as server-sent events when `stream` is true)."""
    body = await parse_body(request, ChatCompletionRequest)
    return await _respond(await _inference(request).chat_completion(body))


async def create_completion(request: Request) -> Response:
    """Create a text completion."""
    body = await parse_body(request, CompletionRequest)
    return await _respond(await _inference(request).completion(body))


async def create_embeddings(request: Request) -> Response:
    """Embed text."""
    body = await parse_body(request, EmbeddingRequest)
    return json_response(await _inference(request).embeddings(body))


async def list_models(request: Request) -> Response:
    """List the models this server serves."""
    return json_response(ModelList(data=await _inference(request).list_models()))


async def register_model(request: Request) -> Response:
    """Register a model alias that points at a provider's model."""
    body = await parse_body(request, RegisterModel)
    return json_response(await _inference(request).register_model(body))


async def get_model(request: Request) -> Response:
    """Retrieve a model."""
    return json_response(await _inference(request).get_model(request.path_params["model_id"]))


async def delete_model(request: Request) -> Response:
    """Delete a registered model."""
    model_id = request.path_params["model_id"]
    await _inference(request).unregister_model(model_id)
    return json_response(ModelDeleted(id=model_id, object="model", deleted=True))


def _stored(request: Request) -> StoredCompletions:
    return _inference(request).stored


def _query(request: Request, model: type[Q]) -> tuple[Q, dict[str, str]]:
    """The query string as `model`, and apart from it OpenAI's `metadata[key]=value` filters."""
    plain, metadata = {}, {}
    for key, value in request.query_params.items():
        if key.startswith("metadata[") and key.endswith("]"):
            metadata[key[len("metadata[") : -1]] = value
        else:
            plain[key] = value
    try:
        return model.model_validate(plain), metadata
    except ValidationError as exc:
        raise validation_error(exc) from None


async def list_chat_completions(request: Request) -> Response:
    """List stored chat completions (`store: true`), filtered by `model` and `metadata[key]=value`."""
    query, metadata = _query(request, ListCompletionsQuery)
    return json_response(await _stored(request).list(query, metadata))


async def get_chat_completion(request: Request) -> Response:
    """Retrieve a stored chat completion."""
    return json_response(await _stored(request).retrieve(request.path_params["completion_id"]))


async def update_chat_completion(request: Request) -> Response:
    """Replace a stored chat completion's metadata."""
    body = await parse_body(request, UpdateCompletion)
    return json_response(await _stored(request).update(request.path_params["completion_id"], body.metadata))


async def delete_chat_completion(request: Request) -> Response:
    """Delete a stored chat completion."""
    return json_response(await _stored(request).delete(request.path_params["completion_id"]))


async def list_chat_completion_messages(request: Request) -> Response:
    """List the messages a stored chat completion was asked with."""
    query, _ = _query(request, ListMessagesQuery)
    return json_response(await _stored(request).messages(request.path_params["completion_id"], query))


ROUTES = [
    route("POST", "/chat/completions", create_chat_completion, body=ChatCompletionRequest, response=ChatCompletion),
    route("GET", "/chat/completions", list_chat_completions, response=CompletionList, query=ListCompletionsQuery),
    route("GET", "/chat/completions/{completion_id}", get_chat_completion),
    route("POST", "/chat/completions/{completion_id}", update_chat_completion, body=UpdateCompletion),
    route("DELETE", "/chat/completions/{completion_id}", delete_chat_completion, response=CompletionDeleted),
    route(
        "GET",
        "/chat/completions/{completion_id}/messages",
        list_chat_completion_messages,
        response=CompletionList,
        query=ListMessagesQuery,
    ),
    route("POST", "/completions", create_completion, body=CompletionRequest, response=Completion),
    route("POST", "/embeddings", create_embeddings, body=EmbeddingRequest, response=EmbeddingList),
    route("GET", "/models", list_models, response=ModelList),
    route("POST", "/models", register_model, body=RegisterModel, response=Model),
    route("GET", "/models/{model_id:path}", get_model, response=Model),
    route("DELETE", "/models/{model_id:path}", delete_model, response=ModelDeleted),
]
