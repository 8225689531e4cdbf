"""The inference API's router (model id -> provider) and its HTTP routes, models included."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.inference import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    InferenceProvider,
    decode_base64,
    encode_base64,
)
from lamina.apis.models import Deleted, Model, ModelList, RegisterModel
from lamina.config import ConfigError, ModelConfig
from lamina.errors import LaminaError, bad_request, conflict, not_found
from lamina.http import json_response, parse_body, route, sse_response, stack_of
from lamina.kvstore import KVStore
from lamina.specs import ApiSpec

if TYPE_CHECKING:
    from lamina.resolver import Stack

log = logging.getLogger("lamina")
MODELS = "models/"  # key prefix of registered models in the key-value store


class InferenceRouter:
    def __init__(self, providers: dict[str, InferenceProvider], kvstore: KVStore) -> None:
        self.providers = providers
        self.kvstore = kvstore
        self.models: dict[str, Model] = {}
        self.listed: set[str] = set()  # providers whose model list we have
        self.discovery: asyncio.Task[None] | None = None
        # Set by the safety API when it starts (after us): `chat_guard(request, call)` checks the input, calls
        # `call(request)` and checks the output (lamina.apis.guardrails.GuardrailChain).
        self.chat_guard: Callable[..., Awaitable[Any]] | None = None

    async def start(self, configured: list[Model]) -> None:
        for record in [Model.model_validate(item) for item in await self.kvstore.values(MODELS)] + configured:
            self.models[record.id] = record
        # Discovery talks to upstreams; it must not hold up start-up, so it runs in the background and
        # requests for a model it has not listed yet wait for it (or go straight to a named provider).
        self.discovery = asyncio.create_task(self._discover())

    async def _discover(self) -> None:
        async def one(provider_id: str, provider: InferenceProvider) -> None:
            try:
                infos = await provider.list_models()
            except Exception as exc:  # an upstream that is down must not stop the others
                message = exc.message if isinstance(exc, LaminaError) else repr(exc)
                log.warning("could not list the models of provider %s: %s", provider_id, message)
                return
            for info in infos:
                model_id = f"{provider_id}/{info.id}"
                if model_id not in self.models:
                    self.models[model_id] = Model(
                        id=model_id,
                        owned_by=provider_id,
                        provider_id=provider_id,
                        provider_model_id=info.id,
                        model_type=info.model_type,
                        metadata=info.metadata,
                    )
            self.listed.add(provider_id)

        await asyncio.gather(*(one(pid, p) for pid, p in self.providers.items()))

    async def close(self) -> None:
        if self.discovery and not self.discovery.done():
            self.discovery.cancel()

    async def list_models(self) -> list[Model]:
        if self.discovery:
            await self.discovery
        return list(self.models.values())

    async def get_model(self, model_id: str) -> Model:
        if model_id not in self.models and self.discovery:
            await self.discovery
        if model_id not in self.models:
            raise not_found(f"model '{model_id}' not found", param="model", code="model_not_found")
        return self.models[model_id]

    async def register_model(self, request: RegisterModel) -> Model:
        if request.provider_id not in self.providers:
            raise bad_request(
                f"no inference provider '{request.provider_id}'; known: {', '.join(self.providers) or 'none'}",
                param="provider_id",
            )
        if self.discovery:
            await self.discovery
        if request.id in self.models:
            raise conflict(f"model '{request.id}' already exists", param="id")
        model = alias(request, "registered")
        await self.kvstore.set(MODELS + model.id, model.model_dump())
        self.models[model.id] = model
        return model

    async def unregister_model(self, model_id: str) -> None:
        model = await self.get_model(model_id)
        if model.source != "registered":
            raise bad_request(
                f"model '{model_id}' comes from its provider ({model.source}), not a registration; "
                "it cannot be deleted",
                param="model",
            )
        await self.kvstore.delete(MODELS + model_id)
        del self.models[model_id]

    async def resolve(self, model_id: str) -> tuple[InferenceProvider, Model]:
        model = self.models.get(model_id)
        provider_id, _, upstream_id = model_id.partition("/")
        named = upstream_id and provider_id in self.providers
        if model is None and self.discovery and not self.discovery.done() and not named:
            await self.discovery
            model = self.models.get(model_id)
        if model is None and named and provider_id not in self.listed:
            # We could not (yet) list this provider's models: let its upstream judge the name.
            model = Model(id=model_id, provider_id=provider_id, provider_model_id=upstream_id, source="unlisted")
        if model is None:
            raise not_found(
                f"model '{model_id}' not found; GET /v1/models lists the models this server serves",
                param="model",
                code="model_not_found",
            )
        # No model-type check here: for remote models the type is a guess, so the provider decides.
        return self.providers[model.provider_id], model

    async def chat_completion(self, request: ChatCompletionRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        provider, model = await self.resolve(request.model)

        async def call(checked: ChatCompletionRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
            return await provider.chat_completion(checked.model_copy(update={"model": model.provider_model_id}))

        result = await (self.chat_guard(request, call) if self.chat_guard else call(request))
        return _relabel(result, request.model)

    async def completion(self, request: CompletionRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        provider, model = await self.resolve(request.model)
        result = await provider.completion(request.model_copy(update={"model": model.provider_model_id}))
        return _relabel(result, request.model)

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        provider, model = await self.resolve(request.model)
        if isinstance(request.input, list) and not request.input:
            raise bad_request("input must not be empty", param="input")
        result = await provider.embeddings(request.model_copy(update={"model": model.provider_model_id}))
        result["model"] = request.model
        want_base64 = request.encoding_format == "base64"
        for item in result["data"]:
            vector = item["embedding"]
            if want_base64 and not isinstance(vector, str):
                item["embedding"] = encode_base64(vector)
            elif not want_base64 and isinstance(vector, str):
                item["embedding"] = decode_base64(vector)
        return result


def alias(spec: RegisterModel | ModelConfig, source: Literal["registered", "config"]) -> Model:
    """A model that points at a provider's model under a name of the user's choosing."""
    return Model(
        id=spec.id,
        owned_by=spec.provider_id,
        provider_id=spec.provider_id,
        provider_model_id=spec.provider_model_id or spec.id,
        model_type=spec.model_type,
        metadata=spec.metadata,
        source=source,
    )


def _relabel(
    result: dict[str, Any] | AsyncIterator[dict[str, Any]], model: str
) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
    """Answer with the model id the client used, not the provider's own."""
    if isinstance(result, dict):
        result["model"] = model
        return result

    async def relabelled() -> AsyncIterator[dict[str, Any]]:
        async with aclosing(result) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                chunk["model"] = model
                yield chunk

    return relabelled()


async def _router(providers: dict[str, Any], stack: Stack) -> InferenceRouter:
    router = InferenceRouter(providers, stack.kvstore)
    configured = [alias(m, "config") for m in stack.config.models]
    for model in configured:
        if model.provider_id not in providers:
            raise ConfigError(
                f"{stack.config.source}: models: '{model.id}' names unknown provider '{model.provider_id}'"
            )
    await router.start(configured)
    return router


def _inference(request: Request) -> InferenceRouter:
    return stack_of(request).apis["inference"]


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
    return json_response(Deleted(id=model_id, object="model", deleted=True))


API = ApiSpec(
    name="inference",
    description="OpenAI chat completions, completions, embeddings and models",
    router=_router,
    routes=[
        route("POST", "/chat/completions", create_chat_completion, body=ChatCompletionRequest),
        route("POST", "/completions", create_completion, body=CompletionRequest),
        route("POST", "/embeddings", create_embeddings, body=EmbeddingRequest),
        route("GET", "/models", list_models, response=ModelList),
        route("POST", "/models", register_model, body=RegisterModel, response=Model),
        route("GET", "/models/{model_id:path}", get_model, response=Model),
        route("DELETE", "/models/{model_id:path}", delete_model, response=Deleted),
    ],
)
