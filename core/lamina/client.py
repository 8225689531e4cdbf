"""The library client: Lamina's API in-process, without HTTP.

    async with LibraryClient("starter") as client:           # a distro name, a run.yaml path, or a dict
        reply = await client.chat.completions.create(model="openai/gpt-4o-mini", messages=messages)
        async for chunk in await client.chat.completions.create(..., stream=True): ...
        models = await client.models.list()                  # {"object": "list", "data": [...]}, as GET /v1/models
        answer = await client.responses.create(model=..., input="Hi")   # and .retrieve(id), .delete(id)

Answers are the same JSON dicts the HTTP API sends; errors are raised as `LaminaError` with the same status and
body. `client.apis[name]` gives every API's router (files, vector stores, safety...) for the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from lamina.apis.inference.router import InferenceRouter
from lamina.apis.inference.types import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelDeleted,
    ModelList,
    RegisterModel,
)
from lamina.apis.responses.router import ResponsesRouter
from lamina.apis.responses.types import CreateResponse
from lamina.config import RunConfig, load, resolve
from lamina.errors import bad_request, validation_error
from lamina.http import dumps
from lamina.plugins import make_plugin_manager
from lamina.resolver import Stack, start_stack


def _validate(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    """Parse a request as the HTTP route does, from JSON, so its errors are the HTTP API's to the letter."""
    try:
        body = dumps(fields)
    except TypeError as exc:
        raise bad_request(f"the request cannot be sent as JSON: {exc}", code="invalid_json") from None
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


class LibraryClient:
    """`config`: a distro name, a run.yaml path, a dict or a RunConfig. `pm`: the plugin manager to build the
    stack from (default: `make_plugin_manager()`, every installed plugin); tests hand in one they registered
    their own plugins on."""

    def __init__(
        self, config: RunConfig | dict[str, Any] | str | Path, *, pm: pluggy.PluginManager | None = None
    ) -> None:
        self.pm = pm or make_plugin_manager()
        if isinstance(config, dict):
            config = resolve(config)
        elif not isinstance(config, RunConfig):
            from lamina.cli import find_run_config

            config = load(find_run_config(str(config), self.pm))
        self.config = config
        self._exits = AsyncExitStack()
        self.stack: Stack | None = None

    async def __aenter__(self) -> LibraryClient:
        self.stack = await self._exits.enter_async_context(start_stack(self.config, self.pm))
        inference = self.stack.api(InferenceRouter)

        async def chat(**fields: Any) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
            return await inference.chat_completion(_validate(ChatCompletionRequest, fields))

        async def complete(**fields: Any) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
            return await inference.completion(_validate(CompletionRequest, fields))

        async def embed(**fields: Any) -> dict[str, Any]:
            return await inference.embeddings(_validate(EmbeddingRequest, fields))

        # Each answer is the JSON the HTTP route sends for the same request, as a dict.
        async def list_models() -> dict[str, Any]:
            return ModelList(data=await inference.list_models()).model_dump(mode="json")

        async def retrieve_model(model_id: str) -> dict[str, Any]:
            return (await inference.get_model(model_id)).model_dump(mode="json")

        async def register_model(**fields: Any) -> dict[str, Any]:
            return (await inference.register_model(_validate(RegisterModel, fields))).model_dump(mode="json")

        async def delete_model(model_id: str) -> dict[str, Any]:
            await inference.unregister_model(model_id)
            return ModelDeleted(id=model_id, object="model", deleted=True).model_dump(mode="json")

        responses = self.stack.api(ResponsesRouter)

        async def respond(**fields: Any) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
            return await responses.create(_validate(CreateResponse, fields))

        self.responses = SimpleNamespace(create=respond, retrieve=responses.retrieve, delete=responses.delete)
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=chat))
        self.completions = SimpleNamespace(create=complete)
        self.embeddings = SimpleNamespace(create=embed)
        self.models = SimpleNamespace(
            list=list_models, retrieve=retrieve_model, register=register_model, delete=delete_model
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._exits.aclose()

    @property
    def apis(self) -> dict[str, Any]:
        assert self.stack is not None, "use the client inside `async with`"
        return self.stack.apis
