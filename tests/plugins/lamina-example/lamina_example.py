"""inline::echo: answers with a configurable prefix and the last user message, streamed word by word."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import lamina
from lamina.apis.inference.provider import chat_choice, chat_completion, stream_text, usage
from lamina.apis.inference.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelInfo
from pydantic import Field


class EchoConfig(lamina.ProviderConfig):
    prefix: str = Field("echo: ", description="put before every answer")


class Echo:
    def __init__(self, config: EchoConfig) -> None:
        self.prefix = config.prefix

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id="echo-1")]

    async def chat_completion(self, request: ChatCompletionRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        text = self.prefix + next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        if not request.stream:
            return chat_completion(request.model, [chat_choice(0, text, "stop")], usage(1, len(text.split())))
        return stream_text(request.model, _words(text))

    async def completion(self, request: CompletionRequest) -> dict[str, Any]:
        raise lamina.bad_request("inline::echo only chats", param="model")

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        raise lamina.bad_request("inline::echo does not embed", param="model")


async def _words(text: str) -> AsyncIterator[str]:
    for i, word in enumerate(text.split(" ")):
        yield word if i == 0 else " " + word


async def create(config: EchoConfig, deps: lamina.Deps) -> Echo:
    return Echo(config)  # a heavy provider imports its engine here, not at the top of the module


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
