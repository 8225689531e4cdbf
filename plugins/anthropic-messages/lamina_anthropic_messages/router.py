"""The messages router: an Anthropic Messages request becomes a chat completion of the inference router (so any
inference provider serves it, behind the stack's guardrails), and its answer becomes an Anthropic message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from lamina import LaminaError, bad_request
from lamina.apis.inference.router import InferenceRouter
from lamina.apis.inference.types import ChatCompletionRequest
from lamina.errors import validation_error
from pydantic import ValidationError

from lamina_anthropic_messages import translate
from lamina_anthropic_messages.types import CountTokensRequest, MessagesRequest


class MessagesRouter:
    def __init__(self, inference: InferenceRouter) -> None:
        self.inference = inference

    async def create(self, request: MessagesRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        chat = _chat_request(request, request.max_tokens)
        result = await self.inference.chat_completion(chat)
        stops = request.stop_sequences or []
        if isinstance(result, dict):
            return translate.anthropic_message(result, stops)
        return translate.anthropic_events(result, request.model, stops)

    async def count_tokens(self, request: CountTokensRequest) -> dict[str, int]:
        """The provider's own count of the prompt's tokens: only it knows its tokenizer and chat template. From its
        `count_chat_tokens` when it has one (remote::anthropic: Anthropic's counting endpoint), else from the usage of a
        one-token completion, since chat providers have no counting endpoint."""
        chat = _chat_request(request, max_tokens=1)
        provider, model = await self.inference.resolve(request.model)
        counter = getattr(provider, "count_chat_tokens", None)
        if counter is not None:
            return {"input_tokens": await counter(chat.model_copy(update={"model": model.provider_model_id}))}
        result = await self.inference.chat_completion(chat)
        assert isinstance(result, dict)  # not streamed: `stream` is not a field of count_tokens
        prompt_tokens = (result.get("usage") or {}).get("prompt_tokens")
        if not isinstance(prompt_tokens, int):
            raise LaminaError(
                f"the provider of model '{request.model}' reports no token usage, so its tokens cannot be counted",
                status=400,
                param="model",
            )
        return {"input_tokens": prompt_tokens}


def _chat_request(request: CountTokensRequest, max_tokens: int) -> ChatCompletionRequest:
    if request.thinking and request.thinking.get("type") == "enabled":
        raise bad_request("extended thinking is not supported by this server", param="thinking")
    if request.tool_choice and request.tool_choice.type == "tool" and not request.tool_choice.name:
        raise bad_request("tool_choice: a choice of type 'tool' needs the tool's name", param="tool_choice.name")
    if request.tool_choice and request.tool_choice.type in ("any", "tool") and not request.tools:
        raise bad_request("tool_choice requires tools", param="tool_choice")
    fields = request.model_dump(exclude_none=True, by_alias=True)
    chat = translate.chat_request({**fields, "max_tokens": max_tokens})
    if not chat["messages"]:
        # Only thinking blocks: chat completions have no place for them, so nothing would be left to answer.
        raise bad_request(
            "messages: nothing but thinking blocks, which this server drops: no turn is left", param="messages"
        )
    # Through JSON: the chat models are strict, which in Python mode would want model instances for nested fields.
    try:
        return ChatCompletionRequest.model_validate_json(orjson.dumps(chat))
    except ValidationError as exc:  # valid Anthropic that chat completions cannot hold: still the client's request
        raise bad_request(f"the request has no chat-completion equivalent: {validation_error(exc).message}") from None
