"""The one mapping between Anthropic's Messages API and OpenAI's chat completions, in both directions.

`/v1/messages` (this package) uses the Anthropic → chat half on requests and the chat → Anthropic half on answers;
`remote::anthropic` (lamina-remote-anthropic) uses the opposite halves. Each table below serves both directions,
so what a stop reason, a tool, a tool choice or an image becomes is decided in one place.

Everything here works on plain dicts in each API's wire shape and imports nothing but lamina, so both packages
can use it at no cost; requests arrive already validated by pydantic models.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from lamina import bad_request

# Anthropic stop_reason -> chat finish_reason; STOP_REASONS is the way back (several Anthropic reasons share one
# chat reason, so it names the one each chat reason stands for).
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic tool_choice type -> chat tool_choice (a named tool is `tool` <-> a function object), and back.
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
ANTHROPIC_TOOL_CHOICES = {chat: anthropic for anthropic, chat in TOOL_CHOICES.items()}

# Chat fields Anthropic has no counterpart for: a request using them is refused rather than answered differently.
CHAT_ONLY_FIELDS = ("logprobs", "top_logprobs", "logit_bias", "frequency_penalty", "presence_penalty", "seed")


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def finish_reason(stop_reason: str | None) -> str | None:
    return None if stop_reason is None else FINISH_REASONS.get(stop_reason, "stop")


def stop_reason(finish: str | None, matched: Any, stop_sequences: list[str]) -> tuple[str | None, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for a chat finish_reason. `matched` is what some servers (vLLM)
    report as the choice's `stop_reason`: the stop string that ended the text; without it a stop is `end_turn`."""
    if finish is None:
        return None, None
    if finish == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return STOP_REASONS.get(finish, "end_turn"), None


# Tools and tool choice


def chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def anthropic_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    built = {"name": function["name"], "input_schema": function.get("parameters") or {"type": "object"}}
    if function.get("description"):
        built["description"] = function["description"]
    return built


def chat_tool_choice(choice: dict[str, Any]) -> tuple[str | dict[str, Any], bool | None]:
    """Chat's (tool_choice, parallel_tool_calls) for Anthropic's tool_choice."""
    kind = choice["type"]
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    return TOOL_CHOICES[kind], parallel


def anthropic_tool_choice(choice: str | dict[str, Any] | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if isinstance(choice, dict):
        built: dict[str, Any] = {"type": "tool", "name": choice["function"]["name"]}
    else:
        built = {"type": ANTHROPIC_TOOL_CHOICES[choice or "auto"]}
    if parallel is False and built["type"] != "none":
        built["disable_parallel_tool_use"] = True
    return built


def tool_call(block: dict[str, Any]) -> dict[str, Any]:
    """A chat tool call for a tool_use block."""
    arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
    return {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}


def tool_use(call: dict[str, Any], param: str = "tool_calls") -> dict[str, Any]:
    """A tool_use block for a chat tool call."""
    function = call.get("function") or {}
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError:
        raise bad_request(f"{param}: the arguments of tool call '{call.get('id')}' are not JSON", param=param) from None
    if not isinstance(arguments, dict):
        raise bad_request(f"{param}: tool call arguments must be a JSON object", param=param)
    return {"type": "tool_use", "id": call.get("id") or "", "name": function.get("name") or "", "input": arguments}


# Images


def chat_image(block: dict[str, Any]) -> dict[str, Any]:
    source = block["source"]
    url = f"data:{source['media_type']};base64,{source['data']}" if source["type"] == "base64" else source["url"]
    return {"type": "image_url", "image_url": {"url": url}}


def anthropic_image(part: dict[str, Any], param: str) -> dict[str, Any]:
    url = (part.get("image_url") or {}).get("url") or ""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type, _, encoding = header[5:].partition(";")
        if encoding != "base64" or not data:
            raise bad_request(f"{param}: an image data URL must be base64-encoded", param=param)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


# Requests: Anthropic -> chat


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content or () if block.get("type") == "text")


def chat_request(request: dict[str, Any]) -> dict[str, Any]:
    """A chat completion request for an Anthropic Messages request (validated, as a dict)."""
    messages: list[dict[str, Any]] = []
    if request.get("system"):
        messages.append({"role": "system", "content": text_of(request["system"])})
    for message in request["messages"]:
        messages += _chat_messages(message)
    chat: dict[str, Any] = {"model": request["model"], "messages": messages, "max_tokens": request["max_tokens"]}
    if request.get("stop_sequences"):
        chat["stop"] = request["stop_sequences"]
    for field in ("temperature", "top_p", "top_k"):  # top_k: an extension inline engines and vLLM honour
        if request.get(field) is not None:
            chat[field] = request[field]
    if request.get("tools"):
        chat["tools"] = [chat_tool(tool) for tool in request["tools"]]
    if request.get("tools") and request.get("tool_choice"):  # chat servers refuse a tool_choice without tools
        chat["tool_choice"], parallel = chat_tool_choice(request["tool_choice"])
        if parallel is not None:
            chat["parallel_tool_calls"] = parallel
    output_format = (request.get("output_config") or {}).get("format")
    if output_format:
        schema = {"name": "output", "schema": output_format["schema"], "strict": True}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    user_id = (request.get("metadata") or {}).get("user_id")
    if user_id:
        chat["user"] = user_id
    if request.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _chat_messages(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One Anthropic message is one chat message, except that each tool_result block becomes a `tool` message of
    its own (placed first: chat wants tool answers right after the assistant's calls)."""
    role, content = message["role"], message["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "assistant":
        text = "".join(block["text"] for block in content if block["type"] == "text")
        calls = [tool_call(block) for block in content if block["type"] == "tool_use"]
        built: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            built["tool_calls"] = calls
        return [built]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        if block["type"] == "tool_result":
            result = block.get("content")
            text = text_of(result)
            if block.get("is_error"):
                text = f"Error: {text}"
            tools.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            if isinstance(result, list):  # chat's tool messages hold text only: images go to the user's turn
                parts += [chat_image(item) for item in result if item.get("type") == "image"]
        elif block["type"] == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif block["type"] == "image":
            parts.append(chat_image(block))
    if parts and all(part["type"] == "text" for part in parts):
        return [*tools, {"role": "user", "content": "".join(part["text"] for part in parts)}]
    return [*tools, {"role": "user", "content": parts}] if parts else tools


# Requests: chat -> Anthropic


def anthropic_request(chat: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """An Anthropic Messages request for a chat completion request (validated, as a dict without Nones)."""
    for field in CHAT_ONLY_FIELDS:
        if chat.get(field):
            raise bad_request(f"{field} is not supported by Anthropic's Messages API", param=field)
    if (chat.get("n") or 1) > 1:
        raise bad_request("n > 1 is not supported by Anthropic's Messages API; send n requests", param="n")
    response_format = chat.get("response_format") or {"type": "text"}
    if response_format["type"] == "json_object" or (
        response_format["type"] == "json_schema" and not (response_format.get("json_schema") or {}).get("schema")
    ):
        raise bad_request(
            "Anthropic's Messages API takes a response_format of type json_schema with a schema",
            param="response_format",
        )
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(chat["messages"]):
        param = f"messages.{index}"
        role = message["role"]
        if role in ("system", "developer"):
            system.append(text_of(message.get("content")))
            continue
        blocks = _anthropic_blocks(message, param)
        anthropic_role = "assistant" if role == "assistant" else "user"
        if messages and messages[-1]["role"] == anthropic_role:  # Anthropic alternates; chat need not
            messages[-1]["content"] += blocks
        else:
            messages.append({"role": anthropic_role, "content": blocks})
    request: dict[str, Any] = {
        "model": chat["model"],
        "messages": messages,
        "max_tokens": chat.get("max_completion_tokens") or chat.get("max_tokens") or default_max_tokens,
    }
    if system:
        request["system"] = "\n\n".join(system)
    stop = chat.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    for field in ("temperature", "top_p", "top_k"):
        if chat.get(field) is not None:
            request[field] = chat[field]
    if chat.get("tools"):
        request["tools"] = [anthropic_tool(tool) for tool in chat["tools"]]
        choice = anthropic_tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"))
        if choice is not None:
            request["tool_choice"] = choice
    if response_format["type"] == "json_schema":
        request["output_config"] = {
            "format": {"type": "json_schema", "schema": response_format["json_schema"]["schema"]}
        }
    if chat.get("user"):
        request["metadata"] = {"user_id": chat["user"]}
    if chat.get("stream"):
        request["stream"] = True
    return request


def _anthropic_blocks(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    role, content = message["role"], message.get("content")
    if role in ("tool", "function"):
        return [{"type": "tool_result", "tool_use_id": message.get("tool_call_id") or "", "content": text_of(content)}]
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    else:
        for part in content or ():
            if part.get("type") == "text":
                blocks.append({"type": "text", "text": part.get("text", "")})
            elif part.get("type") == "image_url":
                blocks.append(anthropic_image(part, f"{param}.content"))
            else:
                raise bad_request(
                    f"{param}.content: parts of type '{part.get('type')}' are not supported by Anthropic",
                    param=f"{param}.content",
                )
    for call in message.get("tool_calls") or ():
        blocks.append(tool_use(call, f"{param}.tool_calls"))
    return blocks


# Answers: chat -> Anthropic


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    return {"input_tokens": usage.get("prompt_tokens") or 0, "output_tokens": usage.get("completion_tokens") or 0}


def anthropic_message(completion: dict[str, Any], stop_sequences: list[str]) -> dict[str, Any]:
    """An Anthropic message for a chat completion (its first choice: Anthropic has no `n`)."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": text_of(message["content"])})
    content += [tool_use(call) for call in message.get("tool_calls") or ()]
    reason, sequence = stop_reason(choice.get("finish_reason"), choice.get("stop_reason"), stop_sequences)
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(completion.get("usage")),
    }


async def anthropic_events(
    chunks: AsyncIterator[dict[str, Any]], model: str, stop_sequences: list[str]
) -> AsyncIterator[dict[str, Any]]:
    """Anthropic's stream events for a stream of chat completion chunks (its first choice).

    The closing `message_delta` waits for the end of the chunks: usage arrives in a last chunk of its own.
    """
    message = {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    async with aclosing(chunks):
        # The first chunk before the first event: a provider failing at once still gets its own status code.
        first = await anext(chunks, None)
        yield {"type": "message_start", "message": message}
        yield {"type": "ping"}
        async for event in _events(first, chunks, stop_sequences):
            yield event


async def _events(
    first: dict[str, Any] | None, chunks: AsyncIterator[dict[str, Any]], stop_sequences: list[str]
) -> AsyncIterator[dict[str, Any]]:
    usage: dict[str, Any] | None = None
    finish: tuple[str | None, str | None] = (None, None)
    block = -1  # index of the open content block, -1 when none is open
    block_kind = ""
    tool_blocks: dict[int, int] = {}  # chat tool-call index -> content block index
    next_block = 0
    async for chunk in _prepend(first, chunks):
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if block_kind != "text":
                    if block >= 0:
                        yield {"type": "content_block_stop", "index": block}
                    block, block_kind, next_block = next_block, "text", next_block + 1
                    yield {"type": "content_block_start", "index": block, "content_block": {"type": "text", "text": ""}}
                text = {"type": "text_delta", "text": delta["content"]}
                yield {"type": "content_block_delta", "index": block, "delta": text}
            for call in delta.get("tool_calls") or ():
                position = call.get("index", 0)
                function = call.get("function") or {}
                if position not in tool_blocks:
                    if block >= 0:
                        yield {"type": "content_block_stop", "index": block}
                    block, block_kind, next_block = next_block, "tool_use", next_block + 1
                    tool_blocks[position] = block
                    start = {"type": "tool_use", "id": call.get("id") or "", "name": function.get("name"), "input": {}}
                    yield {"type": "content_block_start", "index": block, "content_block": start}
                if function.get("arguments"):
                    partial = {"type": "input_json_delta", "partial_json": function["arguments"]}
                    yield {"type": "content_block_delta", "index": tool_blocks[position], "delta": partial}
            if choice.get("finish_reason"):
                finish = stop_reason(choice["finish_reason"], choice.get("stop_reason"), stop_sequences)
    if block >= 0:
        yield {"type": "content_block_stop", "index": block}
    counts = anthropic_usage(usage)
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": finish[0] or "end_turn", "stop_sequence": finish[1]},
        "usage": counts,
    }
    yield {"type": "message_stop"}


async def _prepend(first: dict[str, Any] | None, rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    if first is None:
        return
    yield first
    async for item in rest:
        yield item


# Answers: Anthropic -> chat


def chat_usage(usage: dict[str, Any] | None) -> dict[str, int] | None:
    if not usage:
        return None
    prompt = sum(
        usage.get(key) or 0 for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
    completion = usage.get("output_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(message: dict[str, Any]) -> dict[str, Any]:
    """A chat completion for an Anthropic message. Thinking blocks are left out: chat has no place for them."""
    blocks = message.get("content") or []
    text = "".join(block.get("text", "") for block in blocks if block.get("type") == "text")
    calls = [tool_call(block) for block in blocks if block.get("type") == "tool_use"]
    chat_message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        chat_message["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": chat_message,
        "finish_reason": finish_reason(message.get("stop_reason")),
        "logprobs": None,
    }
    return {
        "id": message.get("id") or new_message_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [choice],
        "usage": chat_usage(message.get("usage")),
    }


async def chat_chunks(events: AsyncIterator[dict[str, Any]], include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """Chat completion chunks for a stream of Anthropic events (without `ping`s and `error`s: the caller's)."""
    chunk_id, model, created = new_message_id(), "", int(time.time())
    usage: dict[str, Any] = {}
    tool_calls: dict[int, int] = {}  # content block index -> chat tool-call index

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }

    async with aclosing(events):  # closing the chunks closes the upstream's stream
        async for event in events:
            kind = event.get("type")
            if kind == "message_start":
                message = event.get("message") or {}
                chunk_id, model = message.get("id") or chunk_id, message.get("model") or model
                usage.update(message.get("usage") or {})
                yield chunk({"role": "assistant", "content": ""})
            elif kind == "content_block_start":
                block = event.get("content_block") or {}
                if block.get("type") == "tool_use":
                    position = tool_calls[event.get("index", 0)] = len(tool_calls)
                    function = {"name": block.get("name"), "arguments": ""}
                    yield chunk(
                        {
                            "tool_calls": [
                                {"index": position, "id": block.get("id"), "type": "function", "function": function}
                            ]
                        }
                    )
                elif block.get("type") == "text" and block.get("text"):
                    yield chunk({"content": block["text"]})
            elif kind == "content_block_delta":
                delta = event.get("delta") or {}
                if delta.get("type") == "text_delta":
                    yield chunk({"content": delta.get("text", "")})
                elif delta.get("type") == "input_json_delta" and event.get("index") in tool_calls:
                    arguments = {"arguments": delta.get("partial_json", "")}
                    yield chunk({"tool_calls": [{"index": tool_calls[event["index"]], "function": arguments}]})
            elif kind == "message_delta":
                usage.update({key: value for key, value in (event.get("usage") or {}).items() if value is not None})
                yield chunk({}, finish_reason((event.get("delta") or {}).get("stop_reason")) or "stop")
    if include_usage:
        last = chunk({})
        last["choices"], last["usage"] = [], chat_usage(usage)
        yield last
