"""A fake OpenAI-compatible upstream (a real aiohttp server on 127.0.0.1) for the safety tests.

Chat: replies with what follows `say:` in the last user message (else a greeting), streamed 5 characters a chunk.
Llama Guard: a request whose prompt holds the Llama Guard task gets a verdict: the text between `VERDICT<<` and
`>>` in the conversation if there is one (to test every format the model emits), else `unsafe\\nS1` when the
judged (last) turn mentions a bomb, else `safe`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from lamina.testing import serve_app

CHUNK = 5


@dataclass
class Upstream:
    url: str
    chat_requests: list[dict[str, Any]] = field(default_factory=list)
    guard_requests: list[str] = field(default_factory=list)
    completion_requests: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0  # seconds per streamed chunk

    def reset(self) -> None:
        self.chat_requests.clear()
        self.guard_requests.clear()
        self.completion_requests.clear()


def verdict_for(prompt: str) -> str:
    if explicit := re.search(r"VERDICT<<(.*?)>>", prompt, re.DOTALL):
        return explicit.group(1)
    conversation = prompt.split("<BEGIN CONVERSATION>")[1].split("<END CONVERSATION>")[0].strip()
    last_turn = re.split(r"\n\n(?=User: |Agent: )", conversation)[-1]
    return "unsafe\nS1" if "bomb" in last_turn.lower() else "safe"


def make_app(upstream: Upstream) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "chat"}, {"id": "guard"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        content = body["messages"][-1]["content"]
        if "<BEGIN UNSAFE CONTENT CATEGORIES>" in content:
            upstream.guard_requests.append(content)
            reply = verdict_for(content)
        else:
            upstream.chat_requests.append(body)
            reply = content.split("say:", 1)[1].strip() if "say:" in content else "Hello! How can I help?"
        created = int(time.time())
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(choices: list[dict[str, Any]]) -> None:
            event = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "choices": choices,
            }
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i in range(0, len(reply), CHUNK):
            if upstream.delay:
                await asyncio.sleep(upstream.delay)
            await send([{"index": 0, "delta": {"content": reply[i : i + CHUNK]}, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        await response.write(b"data: [DONE]\n\n")
        return response

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        upstream.completion_requests.append(body)
        prompt = body["prompt"]
        reply = prompt.split("say:", 1)[1].strip() if "say:" in prompt else "once upon a time"

        def answer(text: str, finish_reason: str | None) -> dict[str, Any]:
            choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
            return {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 0,
                "model": body["model"],
                "choices": [choice],
            }

        if not body.get("stream"):
            return web.json_response(answer(reply, "stop"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        pieces = [answer(reply[i : i + CHUNK], None) for i in range(0, len(reply), CHUNK)] + [answer("", "stop")]
        for piece in pieces:
            await response.write(b"data: " + json.dumps(piece).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    return app


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    upstream = Upstream(url="")
    with serve_app(make_app(upstream), name="fake-upstream") as served:
        upstream.url = f"http://127.0.0.1:{served.port}/v1"
        yield upstream


@pytest.fixture(scope="session")
def stack_config(upstream: Upstream) -> Any:
    return lambda **extra: base_config(upstream, **extra)


def base_config(
    upstream: Upstream, *, models: list[Any] | None = None, guardrails: list[Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """Inference `up` (the fake: up/chat, up/guard), safety `rules` and `llama-guard`, shields for each."""
    return {
        "providers": {
            "inference": [
                {
                    "id": "up",
                    "type": "remote::openai",
                    "config": {"base_url": upstream.url, "models": ["chat", "guard"], "max_retries": 0},
                }
            ],
            "safety": [
                {"id": "rules", "type": "inline::rules", "config": {"redact": True}},
                {"id": "llama-guard", "type": "inline::llama-guard", "config": {"model": "up/guard"}},
            ],
        },
        "apis": {
            "inference": {"models": models or []},
            "safety": {
                "shields": [
                    {"id": "llama-guard", "provider_id": "llama-guard"},
                    {"id": "pii", "provider_id": "rules", "params": {"categories": ["pii"]}},
                    {"id": "injection", "provider_id": "rules", "params": {"categories": ["prompt_injection"]}},
                    {"id": "rules", "provider_id": "rules"},
                ],
                "guardrails": guardrails or [],
            },
        },
        **extra,
    }
