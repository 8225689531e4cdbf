"""What an inference provider implements, and builders that help inline providers answer in OpenAI's shape.

Requests arrive validated, with `model` already rewritten to the provider's own model id. Providers answer with
plain dicts in OpenAI's response shape, or, when the request streams, an async iterator of chunk dicts: a remote
provider relays its upstream's JSON without re-validating it, which keeps the gateway cheap.

Errors: raise `lamina.LaminaError` (a 4xx the client should see, e.g. `lamina.bad_request`) or
`lamina.UpstreamError` (502/503/504 naming the provider). Anything else becomes a 500 that names the provider.
A stream that fails after its first chunk cannot change its status any more: the client receives one last
`data: {"error": {...}}` event and the stream ends (no `[DONE]`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Protocol

from lamina.apis.inference.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelInfo


class InferenceProvider(Protocol):
    """An inference provider. `list_models` runs in the background at start-up (a slow upstream never delays
    start-up); a provider that serves no chat, completions or embeddings raises `lamina.bad_request` there."""

    async def list_models(self) -> list[ModelInfo]: ...

    async def chat_completion(
        self, request: ChatCompletionRequest
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]: ...

    async def completion(self, request: CompletionRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]: ...

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]: ...


# Builders for providers that make their answers themselves.


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_choice(
    index: int,
    content: str | None,
    finish_reason: str,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "finish_reason": finish_reason, "logprobs": logprobs}


def chat_completion(model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None) -> dict[str, Any]:
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def chat_chunk(
    id: str, model: str, created: int, choices: list[dict[str, Any]], usage: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def text_completion(model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None) -> dict[str, Any]:
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def embedding_response(model: str, vectors: list[list[float]], prompt_tokens: int) -> dict[str, Any]:
    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


async def stream_text(
    model: str, pieces: AsyncIterable[str], *, finish_reason: str = "stop", usage: dict[str, int] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Chat completion chunks for text produced piece by piece: a first chunk with the role, one per piece, and
    a last one with `finish_reason` (and `usage`, when given)."""
    chunk_id, created = new_id("chatcmpl"), int(time.time())
    yield chat_chunk(chunk_id, model, created, [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
    async for piece in pieces:
        if piece:
            choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
            yield chat_chunk(chunk_id, model, created, [choice])
    last = {"index": 0, "delta": {}, "finish_reason": finish_reason}
    yield chat_chunk(chunk_id, model, created, [last], usage)
