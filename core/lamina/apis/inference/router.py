"""The inference router: model id -> provider, the models registry, and guardrails around text generation.

Models come from three places: the run config's aliases (`apis.inference.models`), the providers' own lists
(discovered in the background at start-up, kept in memory: they are derived, not stored) and aliases users
register over HTTP, kept in the stack's storage and read through on every lookup so that every process sharing
the storage agrees on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from typing import TYPE_CHECKING, Any, Literal

from lamina import auth
from lamina.apis.inference.provider import InferenceProvider
from lamina.apis.inference.stored import StoredCompletions
from lamina.apis.inference.types import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Model,
    ModelConfig,
    ModelInfo,
    RegisterModel,
    decode_base64,
    encode_base64,
)
from lamina.errors import LaminaError, bad_request, conflict, not_found
from lamina.providers import malformed
from lamina.quotas import note_model, note_usage
from lamina.shared import Shared
from lamina.storage import Registry

if TYPE_CHECKING:
    from lamina.guardrails import GuardrailChain

log = logging.getLogger("lamina")
Result = dict[str, Any] | AsyncIterator[dict[str, Any]]


class InferenceRouter:
    def __init__(
        self,
        providers: dict[str, InferenceProvider],
        registered: Registry[Model],
        configured: list[Model],
        guardrails: GuardrailChain,
        stored: StoredCompletions,
        discovery_wait: float | None = None,
        shared: Shared | None = None,
    ) -> None:
        self.providers = providers
        self.shared = shared or Shared()
        self.stored = stored
        self.discovery_wait = discovery_wait
        self.registered = registered
        self.configured = {model.id: model for model in configured}
        self.discovered: dict[str, Model] = {}
        self.listed: set[str] = set()  # providers whose model list we have
        self.discovery: asyncio.Task[None] | None = None
        self.guardrails = guardrails

    def start(self) -> None:
        # Discovery talks to upstreams; it must not hold up start-up, so it runs in the background and
        # requests for a model it has not listed yet wait for it (or go straight to a named provider).
        self.discovery = asyncio.create_task(self._discover())

    async def _discover(self) -> None:
        async def one(provider_id: str, provider: InferenceProvider) -> None:
            async def listed() -> list[dict[str, Any]]:
                return [info.model_dump() for info in await provider.list_models()]

            try:
                # Through the shared cache: replicas starting together ask the upstream once.
                infos = [ModelInfo.model_validate(info) for info in await self.shared.model_list(provider_id, listed)]
            except Exception as exc:  # an upstream that is down must not stop the others
                message = exc.message if isinstance(exc, LaminaError) else repr(exc)
                log.warning("could not list the models of provider %s: %s", provider_id, message)
                return
            for info in infos:
                model_id = f"{provider_id}/{info.id}"
                self.discovered[model_id] = Model(
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

    async def _discovered(self) -> None:
        """Wait for discovery (`discovery_wait` seconds at most, if set): then what was listed so far answers."""
        if self.discovery and not self.discovery.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.discovery), self.discovery_wait)

    async def list_models(self) -> list[Model]:
        await self._discovered()
        models = {**self.discovered, **self.configured}
        models.update(
            (model.id, model)
            for model in await self.registered.list()
            if auth.can("read", "model", model.id, model.owner)
        )
        return list(models.values())

    async def _lookup(self, model_id: str) -> Model | None:
        """The one place a model is found by id (every route, and other APIs, resolve through here): a
        registered model the caller may not read does not exist for it. Configured and discovered models have
        no owner: every caller may use them."""
        known = self.configured.get(model_id) or self.discovered.get(model_id)
        if known is not None:
            return known
        model = await self.registered.get(model_id)
        return model if model is None or auth.can("read", "model", model_id, model.owner) else None

    async def get_model(self, model_id: str) -> Model:
        model = await self._lookup(model_id)
        if model is None:
            await self._discovered()
            model = await self._lookup(model_id)
        if model is None:
            raise not_found(f"model '{model_id}' not found", param="model", code="model_not_found")
        return model

    async def register_model(self, request: RegisterModel) -> Model:
        if request.provider_id not in self.providers:
            raise bad_request(
                f"no inference provider '{request.provider_id}'; known: {', '.join(self.providers) or 'none'}",
                param="provider_id",
            )
        owner = auth.owner()
        auth.require("create", "model", request.id, owner)
        await self._discovered()
        # Ids are one namespace: a model another caller registered is in the way even if this one cannot see it.
        taken = self.configured.get(request.id) or self.discovered.get(request.id)
        if taken is not None or await self.registered.get(request.id) is not None:
            raise conflict(f"model '{request.id}' already exists", param="id")
        return await self.registered.put(alias(request, "registered").model_copy(update={"owner": owner}))

    async def unregister_model(self, model_id: str) -> None:
        model = await self.get_model(model_id)
        if model.source != "registered":
            raise bad_request(
                f"model '{model_id}' comes from its provider ({model.source}), not a registration; "
                "it cannot be deleted",
                param="model",
            )
        auth.require("delete", "model", model_id, model.owner)
        await self.registered.delete(model_id)

    async def resolve(self, model_id: str) -> tuple[InferenceProvider, Model]:
        model = await self._lookup(model_id)
        provider_id, _, upstream_id = model_id.partition("/")
        if model is None and not (upstream_id and provider_id in self.providers):
            await self._discovered()
            model = await self._lookup(model_id)
        elif model is None and provider_id in self.listed:
            model = self.discovered.get(model_id)  # the listing may have landed while we looked in storage
        elif model is None:
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

    async def chat_completion(self, request: ChatCompletionRequest, *, guarded: bool = True) -> Result:
        """A chat completion, through the stack's guardrails unless `guarded=False` (a guardrail's own call)."""
        provider, model = await self.resolve(request.model)

        async def call(checked: ChatCompletionRequest) -> Result:
            upstream = checked.model_copy(update={"model": model.provider_model_id, "store": None})
            with _errors_name(request.model, model):
                result = await provider.chat_completion(upstream)
            return _relabel(result, request.model, model, provider)

        result = await (self.guardrails.chat(request, call) if guarded else call(request))
        if not request.store:
            return result
        asked = request.model_dump(mode="json", exclude_none=True)
        if isinstance(result, dict):
            await self.stored.store(asked, result)
            return result
        return self.stored.store_stream(asked, result)

    async def completion(self, request: CompletionRequest, *, guarded: bool = True) -> Result:
        provider, model = await self.resolve(request.model)

        async def call(checked: CompletionRequest) -> Result:
            with _errors_name(request.model, model):
                result = await provider.completion(checked.model_copy(update={"model": model.provider_model_id}))
            return _relabel(result, request.model, model, provider)

        return await (self.guardrails.completion(request, call) if guarded else call(request))

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        provider, model = await self.resolve(request.model)
        if isinstance(request.input, list) and not request.input:
            raise bad_request("input must not be empty", param="input")
        with _errors_name(request.model, model):
            result = await provider.embeddings(request.model_copy(update={"model": model.provider_model_id}))
        data = result.get("data") if isinstance(result, dict) else None
        if not isinstance(data, list) or not all(isinstance(item, dict) and "embedding" in item for item in data):
            raise malformed(provider, "an embeddings answer without a `data` list of embeddings", result)
        result["model"] = request.model
        note_usage(request.model, result.get("usage"))
        want_base64 = request.encoding_format == "base64"
        for item in data:
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


@contextmanager
def _errors_name(sent: str, model: Model) -> Iterator[None]:
    """A provider's errors name the model by the provider's own id (`SmolLM2-135M-Instruct`); the client knows it
    by the id it sent (`torch/SmolLM2-135M-Instruct`, or an alias), so they are reworded to name that one. Only
    quoted occurrences are: the provider's id may be part of other words."""
    try:
        yield
    except LaminaError as exc:
        own = model.provider_model_id
        if own != sent:
            for quote in "'`\"":
                exc.message = exc.message.replace(f"{quote}{own}{quote}", f"{quote}{sent}{quote}")
        raise


def _relabel(result: Any, sent: str, model: Model, provider: Any) -> Result:
    """Answer with the model id the client used, not the provider's own."""
    note_model(sent)  # for usage accounting, also when a stream reports no usage
    if isinstance(result, dict):
        result["model"] = sent
        note_usage(sent, result.get("usage"))
        return result
    if not hasattr(result, "__anext__"):
        raise malformed(provider, "neither a dict nor an async iterator of chunk dicts", result)

    async def relabelled() -> AsyncIterator[dict[str, Any]]:
        with _errors_name(sent, model):
            async with aclosing(result) as chunks:
                async for chunk in chunks:
                    if not isinstance(chunk, dict):
                        raise malformed(provider, "a stream chunk that is not a dict", chunk)
                    chunk["model"] = sent
                    if chunk.get("usage"):
                        note_usage(sent, chunk["usage"])
                    yield chunk

    return relabelled()
