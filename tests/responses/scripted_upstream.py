"""A scripted OpenAI-compatible upstream on 127.0.0.1 for the Responses tests (the pattern of
tests/e2e/fake_openai.py: a real aiohttp server in a thread of its own).

It behaves like a model that uses tools: when a request carries tools and no tool output has come back since the
last user message, it calls a tool (the one `tool_choice` names, else `file_search` when offered, else the first
function) with arguments built from the user's message (the message itself when it is a JSON object); otherwise it answers in text built from what it
received — the last user message and every tool output after it — so a test can prove tool outputs reached the
model. A user message containing `loop` makes it call tools forever (for `max_tool_calls`). Embeddings are
bags of hashed words, so a query finds the chunks that share its words. `python scripted_upstream.py PORT`
serves it alone (for bench/responses.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import sys
import threading
from typing import Any

from aiohttp import web
from lamina.testing import serve_app

CHAT_MODEL = "gpt-scripted"
EMBEDDING_MODEL = "embed-scripted"
DIMENSIONS = 64


def embed(text: str) -> list[float]:
    vector = [0.0] * DIMENSIONS
    for word in text.lower().split():
        word = "".join(ch for ch in word if ch.isalnum())
        if word:
            vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIMENSIONS] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def plan(body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None, str]:
    """What the scripted model does: (tool name, its arguments) or None, and the text of its answer."""
    messages = body.get("messages") or []
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    user = text_of(messages[last_user].get("content")) if last_user >= 0 else ""
    tool_outputs = [text_of(m.get("content")) for m in messages[last_user + 1 :] if m.get("role") == "tool"]
    system = [text_of(m.get("content")) for m in messages if m.get("role") == "system"]
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    wants_tool = tools and choice != "none" and (not tool_outputs or "loop" in user)
    if wants_tool:
        names = [t["function"]["name"] for t in tools]
        if isinstance(choice, dict):
            name = choice["function"]["name"]
        else:
            name = "file_search" if "file_search" in names else names[0]
        parameters = next((t["function"].get("parameters") or {} for t in tools if t["function"]["name"] == name), {})
        fields = list((parameters.get("properties") or {}).keys()) or ["question"]
        arguments = {"queries": [user]} if name == "file_search" else dict.fromkeys(fields, user)
        try:  # a user message that is a JSON object is taken as the arguments, as they are
            given = json.loads(user)
        except ValueError:
            given = None
        if isinstance(given, dict) and name != "file_search":
            arguments = given
        return name, arguments, ""
    text = f"echo: {user}"
    if system:
        text += f" | system: {' / '.join(system)}"
    if tool_outputs:
        text += f" | tools: {' / '.join(tool_outputs)}"
    fmt = (body.get("response_format") or {}).get("type")
    if fmt in ("json_object", "json_schema"):
        text = json.dumps({"echo": user, "format": fmt})
    return None, None, text


def tokens(body: dict[str, Any]) -> int:
    """The scripted model's own token count of a chat request: its words, and 3 per message."""
    messages = body.get("messages") or []
    words = sum(len(text_of(m.get("content")).split()) for m in messages)
    return words + 3 * len(messages)


class ScriptedUpstream:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.reset()

    def reset(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.stream_delay = 0.0
        self.hang_seconds = 0.0  # every chat request waits this long before answering
        self.fail_status = 0  # answer chat requests with this status when set
        self.fail_from = 1  # ... from this chat request on (1: every one)
        self.context_window = 0  # when set, chat requests of more tokens (`tokens`) are refused as vLLM does
        self.refused: list[dict[str, Any]] = []  # the chat requests refused as too long
        self.disconnects = 0
        self.disconnected = threading.Event()
        self.chat_started = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def chats(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("messages") is not None]

    def __enter__(self) -> ScriptedUpstream:
        app = self.app()
        self.served = serve_app(app, port=self.port, name="scripted-upstream").__enter__()
        self.port = self.served.port
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.served.__exit__(*exc_info)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_post("/v1/chat/completions", self.handle_chat)
        app.router.add_post("/v1/embeddings", self.handle_embeddings)
        return app

    async def handle_models(self, request: web.Request) -> web.StreamResponse:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in (CHAT_MODEL, EMBEDDING_MODEL)
        ]
        return web.json_response({"object": "list", "data": data})

    async def handle_embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": embed(str(t))} for i, t in enumerate(inputs)]
        usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
        return web.json_response({"object": "list", "model": body["model"], "data": data, "usage": usage})

    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.chat_started.set()
        if self.hang_seconds:
            await asyncio.sleep(self.hang_seconds)
        if self.context_window and (used := tokens(body)) > self.context_window:
            self.requests.pop()
            self.refused.append(body)
            message = (
                f"This model's maximum context length is {self.context_window} tokens. However, you requested "
                f"{used} tokens in the messages. Please reduce the length of the messages."
            )
            error = {"message": message, "type": "BadRequestError", "param": None, "code": 400}
            return web.json_response({"object": "error", **error}, status=400)
        if self.fail_status and len(self.chats()) >= self.fail_from:
            error = {"message": "scripted failure", "type": "server_error", "param": None, "code": None}
            return web.json_response({"error": error}, status=self.fail_status)
        name, arguments, text = plan(body)
        words = text.split(" ") if text else []
        finish = "tool_calls" if name else "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "length"
            text = " ".join(words)
        usage = {"prompt_tokens": 10, "completion_tokens": max(1, len(words)), "total_tokens": 10 + max(1, len(words))}
        call_id = f"call_{len(self.requests)}"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if name else text}
            if name:
                function = {"name": name, "arguments": json.dumps(arguments)}
                message["tool_calls"] = [{"id": call_id, "type": "function", "function": function}]
            choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            return web.json_response(
                {
                    "id": "chatcmpl-scripted",
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": body.get("model"),
                    "choices": [choice],
                    "usage": usage,
                }
            )

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason}] if delta or finish_reason else []
            return {
                "id": "chatcmpl-scripted",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": body.get("model"),
                "choices": choices,
                **extra,
            }

        events = [chunk({"role": "assistant", "content": ""})]
        if name:
            encoded = json.dumps(arguments)
            head = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            events.append(chunk({"tool_calls": [head]}))
            half = len(encoded) // 2
            for part in (encoded[:half], encoded[half:]):
                events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
        else:
            for j, word in enumerate(words):
                events.append(chunk({"content": word if j == 0 else " " + word}))
        events.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk({}, None, usage=usage))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for event in events:
                await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                if self.stream_delay:
                    await asyncio.sleep(self.stream_delay)
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionError, asyncio.CancelledError):
            self.disconnects += 1
            self.disconnected.set()
            raise
        return response


def main() -> None:
    upstream = ScriptedUpstream(int(sys.argv[1]))
    web.run_app(upstream.app(), host="127.0.0.1", port=upstream.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
