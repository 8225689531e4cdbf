"""inline::echo: answers with a configurable prefix and the last user message, streamed word by word."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import lamina
from lamina.apis.inference import provider as oa
from lamina.apis.inference import types


class EchoConfig(lamina.ProviderConfig):
    prefix: str = "echo: "


class Echo:
    def __init__(self, config: EchoConfig) -> None:
        self.prefix = config.prefix

    async def list_models(self) -> list[types.ModelInfo]:
        return [types.ModelInfo(id="echo-1")]

    async def chat_completion(self, request: types.ChatCompletionRequest) -> dict[str, Any] | AsyncIterator[dict]:
        text = self.prefix + next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        if not request.stream:
            return oa.chat_completion(request.model, [oa.chat_choice(0, text, "stop")], oa.usage(1, len(text.split())))
        return self._stream(request.model, text)

    async def _stream(self, model: str, text: str) -> AsyncIterator[dict[str, Any]]:
        chunk_id, created = oa.new_id("chatcmpl"), int(time.time())
        for i, word in enumerate(text.split(" ")):
            delta = {"content": word if i == 0 else " " + word}
            yield oa.chat_chunk(chunk_id, model, created, [{"index": 0, "delta": delta, "finish_reason": None}])
        yield oa.chat_chunk(chunk_id, model, created, [{"index": 0, "delta": {}, "finish_reason": "stop"}])

    async def completion(self, request: types.CompletionRequest) -> dict[str, Any]:
        raise lamina.bad_request("inline::echo only chats", param="model")

    async def embeddings(self, request: types.EmbeddingRequest) -> dict[str, Any]:
        raise lamina.bad_request("inline::echo does not embed", param="model")


async def create(config: EchoConfig, deps: lamina.Deps) -> Echo:
    return Echo(config)


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="inference",
            type="inline::echo",
            config=EchoConfig,
            create=create,
            description="echoes the last user message",
        )
    ]
