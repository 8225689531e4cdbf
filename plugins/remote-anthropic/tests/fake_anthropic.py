"""A fake Anthropic Messages API on 127.0.0.1, scripted per test: the documented wire format, streaming included.

    with FakeAnthropic() as fake:             # a real aiohttp server in a thread of its own
        fake.fail(529, times=1)               # the next POST answers 529 overloaded, then normal answers
        fake.base_url                         # http://127.0.0.1:<port> (the API's root, without /v1)

It checks requests the way Anthropic does (headers, `max_tokens`, alternating roles starting with the user,
tool results answering an earlier tool use) and answers 400 `invalid_request_error` otherwise. Answers are
deterministic: text replies are `echo: <last user text>`; with tools, and no tool result in the last turn, the
reply is one `tool_use` of the first tool (or the named one) with `TOOL_INPUT`; `stop_sequences` cut the echo
(`stop_reason: stop_sequence`); `max_tokens` counts words (`stop_reason: max_tokens`). Every request is recorded
in `fake.requests`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from lamina.testing import serve_app

MODELS = ["claude-fake-1", "claude-fake-2", "claude-fake-3"]
TOOL_INPUT = {"city": "Paris", "unit": "celsius"}
API_KEY = "sk-ant-test-secret-456"


@dataclass
class Fault:
    kind: str  # "status" | "midstream"
    times: int  # -1 = every request
    status: int = 500
    error_type: str = "api_error"


def invalid(message: str, status: int = 400, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if block.get("type") == "text")


def input_tokens(body: dict[str, Any]) -> int:
    """The fake's token count: words of the system prompt and of each message's JSON content."""
    system = len(text_of(body.get("system") or "").split())
    return system + sum(len(json.dumps(m["content"]).split()) for m in body["messages"])


class FakeAnthropic:
    def __init__(self) -> None:
        self.port = 0
        self.reset()

    def reset(self) -> None:
        self.requests: list[dict[str, Any]] = []  # {"method", "path", "headers", "body"}
        self.faults: list[Fault] = []
        self.page_size = 2  # /v1/models pages, so listing must follow `has_more`
        self.stream_delay = 0.0  # seconds between streamed events
        self.disconnected = threading.Event()  # a stream's client went away before its end

    def fail(self, status: int, *, times: int = -1, error_type: str = "api_error") -> None:
        self.faults.append(Fault("status", times, status=status, error_type=error_type))

    def fail_midstream(self, *, times: int = -1, error_type: str = "overloaded_error") -> None:
        """Stream a first text delta, then an `error` event, as Anthropic does when it fails while streaming."""
        self.faults.append(Fault("midstream", times, error_type=error_type))

    def hits(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeAnthropic:
        app = self.app()
        self.served = serve_app(app, port=0, name="fake-anthropic").__enter__()
        self.port = self.served.port
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.served.__exit__(*exc_info)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_post("/v1/messages", self.handle_messages)
        app.router.add_post("/v1/messages/count_tokens", self.handle_count_tokens)
        return app

    def _fault(self, kind: str) -> Fault | None:
        while self.faults and self.faults[0].times == 0:
            self.faults.pop(0)
        if not self.faults or self.faults[0].kind != kind:
            return None
        fault = self.faults[0]
        if fault.times > 0:
            fault.times -= 1
        return fault

    async def _record(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body = await request.json() if request.can_read_body else {}
        self.requests.append(
            {"method": request.method, "path": request.path, "headers": dict(request.headers), "body": body}
        )
        if request.headers.get("x-api-key") != API_KEY:
            # Echoing the key back, as real upstreams' credential errors do: Lamina must mask it.
            return body, invalid(f"invalid x-api-key: {request.headers.get('x-api-key')}", 401, "authentication_error")
        if not request.headers.get("anthropic-version"):
            return body, invalid("anthropic-version: header is required")
        if (fault := self._fault("status")) is not None:
            return body, invalid(f"scripted failure {fault.status}", fault.status, fault.error_type)
        return body, None

    async def handle_models(self, request: web.Request) -> web.Response:
        _, refused = await self._record(request)
        if refused is not None:
            return refused
        after = request.query.get("after_id")
        start = MODELS.index(after) + 1 if after else 0
        page = MODELS[start : start + self.page_size]
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in page]
        more = start + self.page_size < len(MODELS)
        return web.json_response({"data": data, "has_more": more, "first_id": page[0], "last_id": page[-1]})

    async def handle_messages(self, request: web.Request) -> web.StreamResponse:
        body, refused = await self._record(request)
        if refused is not None:
            return refused
        problem = self._check(body)
        if problem:
            return invalid(problem)
        message = self._answer(body)
        if not body.get("stream"):
            return web.json_response(message)
        return await self._stream(request, message)

    async def handle_count_tokens(self, request: web.Request) -> web.Response:
        body, refused = await self._record(request)
        if refused is not None:
            return refused
        unknown = set(body) - {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config"}
        if unknown:
            return invalid(f"{sorted(unknown)[0]}: Extra inputs are not permitted")
        problem = self._check({**body, "max_tokens": 1})
        return invalid(problem) if problem else web.json_response({"input_tokens": input_tokens(body)})

    @staticmethod
    def _check(body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return "max_tokens: Field required"
        messages = body.get("messages")
        if not messages or messages[0].get("role") != "user":
            return "messages: the first message must use the user role"
        if body.get("temperature") is not None and not 0 <= body["temperature"] <= 1:
            return "temperature: Input should be less than or equal to 1"
        tool_uses: set[str] = set()
        for index, message in enumerate(messages):
            if index and message["role"] == messages[index - 1]["role"]:
                return f"messages.{index}: roles must alternate between user and assistant"
            if message["role"] not in ("user", "assistant"):
                return f"messages.{index}.role: Input should be 'user' or 'assistant'"
            for block in [] if isinstance(message["content"], str) else message["content"]:
                if block["type"] == "tool_use":
                    tool_uses.add(block["id"])
                if block["type"] == "tool_result" and block["tool_use_id"] not in tool_uses:
                    return f"messages.{index}: tool_result for unknown tool_use id {block['tool_use_id']}"
                if block["type"] == "image" and block["source"]["type"] == "base64" and not block["source"]["data"]:
                    return f"messages.{index}: image data is empty"
        for tool in body.get("tools") or ():
            if "input_schema" not in tool:
                return "tools.0.input_schema: Field required"
        return None

    @staticmethod
    def _answer(body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        last = messages[-1]["content"]
        answered_tool = not isinstance(last, str) and any(b["type"] == "tool_result" for b in last)
        choice = body.get("tool_choice") or {"type": "auto"}
        content: list[dict[str, Any]]
        if body.get("tools") and not answered_tool and choice["type"] != "none":
            name = choice.get("name") or body["tools"][0]["name"]
            content = [{"type": "tool_use", "id": "toolu_fake_0", "name": name, "input": TOOL_INPUT}]
            stop_reason, stop_sequence = "tool_use", None
            output_tokens = 10
        else:
            words = f"echo: {text_of(last)}".split()
            stop_reason, stop_sequence = "end_turn", None
            if len(words) > body["max_tokens"]:
                words, stop_reason = words[: body["max_tokens"]], "max_tokens"
            text = " ".join(words)
            for sequence in body.get("stop_sequences") or ():
                if sequence in text:
                    text, stop_reason, stop_sequence = text[: text.index(sequence)], "stop_sequence", sequence
                    break
            content = [{"type": "text", "text": text}]
            output_tokens = len(text.split())
        return {
            "id": "msg_fake_01",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {"input_tokens": input_tokens(body), "output_tokens": output_tokens, "cache_read_input_tokens": 2},
        }

    async def _stream(self, request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
        start["usage"] = {**message["usage"], "output_tokens": 1}
        events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                events.append(
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
                )
                words = block["text"].split(" ")
                for position, word in enumerate(words):
                    piece = word if position == 0 else " " + word
                    events.append(
                        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
                    )
            else:
                events.append({"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}})
                arguments = json.dumps(block["input"])
                half = len(arguments) // 2
                for part in (arguments[:half], arguments[half:]):
                    delta = {"type": "input_json_delta", "partial_json": part}
                    events.append({"type": "content_block_delta", "index": index, "delta": delta})
            events.append({"type": "content_block_stop", "index": index})
        delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
        events.append(
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": message["usage"]["output_tokens"]}}
        )
        events.append({"type": "message_stop"})
        fault = self._fault("midstream")
        if fault is not None:
            error = {"type": "error", "error": {"type": fault.error_type, "message": "scripted mid-stream failure"}}
            events = [*events[:4], error]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for event in events:
                await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
                if self.stream_delay:
                    await asyncio.sleep(self.stream_delay)
        except (ConnectionError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return response
