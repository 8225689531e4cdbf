"""A fake OpenAI-compatible upstream on 127.0.0.1, scripted per test.

    with FakeOpenAI() as fake:                 # a real aiohttp server in a thread of its own
        fake.fail(500, times=2)                # the next 2 POSTs answer 500, then normal answers
        fake.base_url                          # http://127.0.0.1:<port>/v1

Answers are deterministic so tests can compute what they expect: chat replies `echo: <last user message>` (cut to
`max_tokens` words, `finish_reason: length`), or, offered `tools`, calls the first with `TOOL_ARGUMENTS` (unless
`tool_choice` is "none" or the last message is a tool's result, which it answers as text, as a model does);
completions reply `completed: <prompt>`, embeddings come from `vector_for(text, dimensions)`. Every request
body is recorded in `fake.requests`, and chat answers carry it back in an extra `echo` field, so tests can
check which fields reached the upstream. `python fake_openai.py PORT` serves it alone (for load tests).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from lamina.testing import serve_app

CHAT_MODEL = "gpt-fake"
EMBEDDING_MODEL = "text-embedding-fake"
DEFAULT_DIMENSIONS = 8
TOOL_ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'


def vector_for(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """Multiples of 1/64 below 16: exact in float32, so base64 and float answers compare equal."""
    seed = sum(text.encode()) + len(text)
    return [((seed * (i + 7)) % 1021) / 64 for i in range(dimensions)]


def words(text: str) -> list[str]:
    return text.split()


def reply_for(body: dict[str, Any]) -> str:
    user = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = user[-1].get("content", "") if user else ""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content)
    return f"echo: {content}"


def limited(text: str, body: dict[str, Any]) -> tuple[str, bool]:
    """The reply cut to `max_tokens` (or `max_completion_tokens`) words, and whether it was cut."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and 0 < limit < len(words(text)):
        return " ".join(words(text)[:limit]), True
    return text, False


def tool_offered(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The tools the fake model calls now: none when told not to, or when it has just got a tool's result."""
    messages = body.get("messages") or [{}]
    if body.get("tool_choice") == "none" or messages[-1].get("role") == "tool":
        return None
    return body.get("tools") or None


def prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(len(words(str(m.get("content") or ""))) + 1 for m in body["messages"])
    prompt = body.get("prompt", "")
    return len(words(prompt if isinstance(prompt, str) else " ".join(map(str, prompt))))


@dataclass
class Fault:
    kind: str  # "status" | "hang" | "drop" | "garbage"
    times: int  # how many requests it applies to; -1 = all
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0


class FakeOpenAI:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.reset()

    # -- control, from any thread ------------------------------------------------------------------------

    def reset(self) -> None:
        self.requests: list[dict[str, Any]] = []  # {"method", "path", "headers", "body", "time"}
        self.faults: list[Fault] = []
        self.stream_delay = 0.0  # seconds between streamed chunks
        self.disconnects = 0  # streaming handlers that saw the client go away
        self.disconnected = threading.Event()
        self.streams_finished = 0
        self.models = [CHAT_MODEL, EMBEDDING_MODEL]
        self.echo_key = False  # scripted failures quote the Authorization header they got, as OpenAI's 401 does
        self.numeric_code = False  # scripted failures carry their status as a number in `code`

    def fail(self, status: int, *, times: int = -1, retry_after: str | None = None) -> None:
        self.faults.append(Fault("status", times, status=status, retry_after=retry_after))

    def hang(self, seconds: float, *, times: int = -1) -> None:
        self.faults.append(Fault("hang", times, seconds=seconds))

    def drop(self, *, times: int = -1) -> None:
        """Close the connection without answering."""
        self.faults.append(Fault("drop", times))

    def garbage(self, *, times: int = -1) -> None:
        """Answer 200 with a body that is not JSON, as a misconfigured proxy would."""
        self.faults.append(Fault("garbage", times))

    def hits(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle --------------------------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAI:
        app = self.app()
        self.served = serve_app(app, port=self.port, name="fake-openai").__enter__()
        self.port = self.served.port
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.served.__exit__(*exc_info)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_post("/v1/chat/completions", self.handle_chat)
        app.router.add_post("/v1/completions", self.handle_completions)
        app.router.add_post("/v1/embeddings", self.handle_embeddings)
        return app

    # -- handlers ---------------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.json() if request.can_read_body else None
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "headers": dict(request.headers),
                "body": body,
                "time": time.monotonic(),
            }
        )
        return body or {}

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        """Apply the first scripted fault still active; None when the request should be answered."""
        while self.faults:
            fault = self.faults[0]
            if fault.times == 0:
                self.faults.pop(0)
                continue
            if fault.times > 0:
                fault.times -= 1
            if fault.kind == "hang":
                await asyncio.sleep(fault.seconds)
                return None
            if fault.kind == "drop":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)  # never reaches the client: the connection is gone
            if fault.kind == "garbage":
                return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            message = f"scripted failure {fault.status}"
            if self.echo_key:
                message += f"; Incorrect API key provided: {request.headers.get('Authorization', '')[7:]}"
            code = fault.status if self.numeric_code else None
            error = {"message": message, "type": "server_error", "param": None, "code": code}
            return web.json_response({"error": error}, status=fault.status, headers=headers)
        return None

    async def handle_models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if (failed := await self._fault(request)) is not None:
            return failed
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models],
            }
        )

    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if (failed := await self._fault(request)) is not None:
            return failed
        text, cut = limited(reply_for(body), body)
        n = body.get("n") or 1
        usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": len(words(text))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        tools = tool_offered(body)
        if body.get("stream"):
            return await self._stream_chat(request, body, text, n, usage, cut)
        choices = []
        for i in range(n):
            message: dict[str, Any] = {"role": "assistant", "content": None if tools else text}
            if tools:
                message["tool_calls"] = [
                    {
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": tools[0]["function"]["name"], "arguments": TOOL_ARGUMENTS},
                    }
                ]
            choice = {
                "index": i,
                "message": message,
                "finish_reason": "tool_calls" if tools else "length" if cut else "stop",
                "logprobs": self._logprobs(text) if body.get("logprobs") else None,
            }
            choices.append(choice)
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body.get("model"),
                "system_fingerprint": "fp_fake",
                "choices": choices,
                "usage": usage,
                "echo": body,
            }
        )

    @staticmethod
    def _logprobs(text: str) -> dict[str, Any]:
        return {
            "content": [
                {"token": w, "logprob": -0.5, "bytes": list(w.encode()), "top_logprobs": []} for w in words(text)
            ]
        }

    async def _stream_chat(
        self, request: web.Request, body: dict[str, Any], text: str, n: int, usage: dict[str, int], cut: bool
    ) -> web.StreamResponse:
        def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": body.get("model"),
                "choices": choices,
                "usage": usage,
            }

        events: list[dict[str, Any]] = []
        tools = tool_offered(body)
        for i in range(n):
            events.append(chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
            if tools:
                name = tools[0]["function"]["name"]
                head = {"index": 0, "id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": ""}}
                events.append(chunk([{"index": i, "delta": {"tool_calls": [head]}, "finish_reason": None}]))
                half = len(TOOL_ARGUMENTS) // 2
                for part in (TOOL_ARGUMENTS[:half], TOOL_ARGUMENTS[half:]):
                    delta = {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
                    events.append(chunk([{"index": i, "delta": delta, "finish_reason": None}]))
            else:
                for j, word in enumerate(words(text)):
                    piece = word if j == 0 else " " + word
                    events.append(chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None}]))
            finish = "tool_calls" if tools else "length" if cut else "stop"
            events.append(chunk([{"index": i, "delta": {}, "finish_reason": finish}]))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk([], usage))
        return await self._send_events(request, events)

    async def _send_events(self, request: web.Request, events: list[dict[str, Any]]) -> web.StreamResponse:
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
        self.streams_finished += 1
        return response

    async def handle_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if (failed := await self._fault(request)) is not None:
            return failed
        prompt = body.get("prompt", "")
        text = f"completed: {prompt}"
        usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": len(words(text))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        base = {"id": "cmpl-fake", "object": "text_completion", "created": 1700000000, "model": body.get("model")}
        if body.get("stream"):
            events = [
                {
                    **base,
                    "choices": [{"index": 0, "text": (" " if j else "") + w, "finish_reason": None, "logprobs": None}],
                }
                for j, w in enumerate(words(text))
            ]
            events.append({**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}]})
            return await self._send_events(request, events)
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        return web.json_response({**base, "choices": [choice], "usage": usage, "echo": body})

    async def handle_embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if (failed := await self._fault(request)) is not None:
            return failed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dimensions = body.get("dimensions") or DEFAULT_DIMENSIONS
        data = []
        for i, text in enumerate(inputs):
            vector: Any = vector_for(str(text), dimensions)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(words(str(t))) for t in inputs)
        return web.json_response(
            {
                "object": "list",
                "model": body["model"],
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    fake = FakeOpenAI(int(sys.argv[1]))
    web.run_app(fake.app(), host="127.0.0.1", port=fake.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
