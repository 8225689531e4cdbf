"""The inference API's HTTP routes: thin handlers that parse, call the router, and answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.inference.router import InferenceRouter
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
from lamina.http import json_response, parse_body, route, router_of, sse_response


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


ROUTES = [
    route("POST", "/chat/completions", create_chat_completion, body=ChatCompletionRequest, response=ChatCompletion),
    route("POST", "/completions", create_completion, body=CompletionRequest, response=Completion),
    route("POST", "/embeddings", create_embeddings, body=EmbeddingRequest, response=EmbeddingList),
    route("GET", "/models", list_models, response=ModelList),
    route("POST", "/models", register_model, body=RegisterModel, response=Model),
    route("GET", "/models/{model_id:path}", get_model, response=Model),
    route("DELETE", "/models/{model_id:path}", delete_model, response=ModelDeleted),
]
