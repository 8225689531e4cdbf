"""`truncation`: fitting a response's context into its model's context window.

With `truncation: "auto"` the oldest turns go first: the chat messages from just after the instructions up to the
next user message, again and again, so a tool's output never loses the call it answers; the instructions and the
last user message (with everything after it: this turn's tool calls and outputs) always stay. With `"disabled"`
(OpenAI's default) a context that does not fit is a 400 `context_length_exceeded` naming the limits.

The window comes from the model's metadata (`context_length`, or vLLM's `max_model_len`: inline::torch reports it,
a run config's model alias can declare it). Without a tokenizer for every model, the context is measured as its
JSON's characters over `CHARS_PER_TOKEN`; the model's own verdict settles it: when its provider still refuses the
context as too long (or the window is unknown), the oldest turn is dropped and the call made again.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lamina.errors import LaminaError, bad_request

CHARS_PER_TOKEN = 4  # English text in JSON, roughly, for the tokenizers in use; the provider's refusal corrects it
WINDOW_KEYS = ("context_length", "max_model_len", "context_window")
# How upstreams say a prompt is too long: OpenAI's code, and the messages of vLLM, llama.cpp and Ollama.
TOO_LONG = re.compile(
    r"context[ _](length|window)|maximum context|too many tokens|prompt is too long|exceeds the context",
    re.IGNORECASE,
)


def window_of(metadata: dict[str, Any]) -> int | None:
    """The model's context window in tokens, when its metadata says."""
    for key in WINDOW_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def estimate(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    """The tokens `messages` (and the tool definitions offered with them) take, estimated."""
    chars = len(json.dumps(messages, ensure_ascii=False)) + (len(json.dumps(tools)) if tools else 0)
    return -(-chars // CHARS_PER_TOKEN)


def drop_oldest_turn(messages: list[dict[str, Any]], head: int) -> bool:
    """Remove the oldest turn after the first `head` messages (the instructions): from there up to the next user
    message. False when nothing can go: what is left starts at the last user message."""
    following = next((i for i in range(head + 1, len(messages)) if messages[i].get("role") == "user"), None)
    if following is None:
        return False
    del messages[head:following]
    return True


def fit(
    messages: list[dict[str, Any]],
    head: int,
    *,
    model: str,
    window: int,
    reserve: int,
    tools: list[dict[str, Any]] | None,
    auto: bool,
) -> None:
    """Make `messages` fit `window` (keeping `reserve` tokens for the answer when truncating), in place; raise the
    400 when they cannot (`auto`: not even the last turn fits)."""
    needed = estimate(messages, tools)
    if not auto:
        if needed > window:
            raise too_long(
                f"the input is about {needed} tokens, more than the {window}-token context window of model "
                f'\'{model}\'; shorten it, or send "truncation": "auto" to drop the oldest turns'
            )
        return
    while needed + reserve > window and drop_oldest_turn(messages, head):
        needed = estimate(messages, tools)
    if needed > window:
        raise too_long(
            f"even with the oldest turns dropped, the instructions and the last message are about {needed} tokens, "
            f"more than the {window}-token context window of model '{model}'"
        )


def is_too_long(exc: LaminaError) -> bool:
    """Whether a provider refused a chat completion because its context is longer than the model takes."""
    return exc.status == 400 and (exc.code == "context_length_exceeded" or bool(TOO_LONG.search(exc.message)))


def too_long(message: str) -> LaminaError:
    return bad_request(message, param="input", code="context_length_exceeded")
