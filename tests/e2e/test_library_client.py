"""The in-process library client: the same answers as over HTTP, without a server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from e2e_helpers import gateway_config
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI, free_port, vector_for
from hypercorn.asyncio import serve
from hypercorn.config import Config
from lamina import LaminaError
from lamina.apis.inference.types import decode_base64
from lamina.client import LibraryClient
from lamina.resolver import Stack
from lamina.server import create_app

MODEL = f"fake/{CHAT_MODEL}"


async def test_library_client(fake: FakeOpenAI, tmp_path: Path) -> None:
    async with LibraryClient(gateway_config(fake, storage={"dir": str(tmp_path)})) as client:
        reply = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "in process"}], seed=3, vendor_flag=True
        )
        assert reply["model"] == MODEL
        assert reply["choices"][0]["message"]["content"] == "echo: in process"
        assert reply["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
        sent = fake.hits("/v1/chat/completions")[0]["body"]
        assert (sent["model"], sent["seed"], sent["vendor_flag"]) == (CHAT_MODEL, 3, True)

        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x y"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "echo: x y"
        assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
        assert {c["model"] for c in chunks} == {MODEL}

        completed = await client.completions.create(model=MODEL, prompt="abc")
        assert completed["choices"][0]["text"] == "completed: abc"

        floats = await client.embeddings.create(model=f"fake/{EMBEDDING_MODEL}", input=["a", "bb"])
        assert [d["embedding"] for d in floats["data"]] == [vector_for("a"), vector_for("bb")]
        encoded = await client.embeddings.create(model=f"fake/{EMBEDDING_MODEL}", input="a", encoding_format="base64")
        assert decode_base64(encoded["data"][0]["embedding"]) == vector_for("a")

        listing = await client.models.list()
        assert listing["object"] == "list"
        ids = {m["id"] for m in listing["data"]}
        assert {MODEL, f"fake/{EMBEDDING_MODEL}"} <= ids
        registered = await client.models.register(id="lib-alias", provider_id="fake", provider_model_id=CHAT_MODEL)
        assert registered["source"] == "registered"
        assert (await client.models.retrieve("lib-alias"))["provider_model_id"] == CHAT_MODEL
        aliased = await client.chat.completions.create(model="lib-alias", messages=[{"role": "user", "content": "q"}])
        assert aliased["model"] == "lib-alias"
        assert await client.models.delete("lib-alias") == {"id": "lib-alias", "object": "model", "deleted": True}

        with pytest.raises(LaminaError) as info:
            await client.models.retrieve("lib-alias")
        assert info.value.status == 404
        with pytest.raises(LaminaError) as info:
            await client.chat.completions.create(model=MODEL, messages="not a list")
        assert (info.value.status, info.value.param) == (400, "messages")
        fake.fail(500)
        with pytest.raises(LaminaError) as info:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}])
        assert info.value.status == 502 and info.value.body()["error"]["type"] == "upstream_error"


@asynccontextmanager
async def over_http(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    """The library client's own stack, served over HTTP on a loopback port too: a session whose base is /v1."""
    config = Config()
    config.bind = [f"127.0.0.1:{free_port()}"]
    stop = asyncio.Event()
    server = asyncio.create_task(serve(create_app(stack), config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    async with aiohttp.ClientSession(f"http://{config.bind[0]}") as session:
        for _ in range(100):
            try:
                async with session.get("/v1/health") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        yield session
    stop.set()
    await server


async def http(session: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with session.request(method, f"/v1{path}", json=body) as response:
        if response.content_type == "text/event-stream":
            events = [line[6:] for line in (await response.text()).splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            return response.status, [json.loads(event) for event in events[:-1]]
        answer = await response.json()
        if response.status >= 400:
            # The request's ids, which only an HTTP request has (the library raises the error itself).
            assert answer["error"].pop("request_id") == response.headers["X-Request-ID"]
            answer["error"].pop("trace_id", None)
        return response.status, answer


async def library(call: Any, *args: Any, **fields: Any) -> tuple[int, Any]:
    try:
        answer = await call(*args, **fields)
    except LaminaError as exc:
        return exc.status, exc.body()
    if not isinstance(answer, dict):
        answer = [chunk async for chunk in answer]
    return 200, answer


def without_request_ids(answer: dict[str, Any]) -> dict[str, Any]:
    """A registration's answer without what differs between any two (the id asked for, also as Llama Stack's
    `identifier`, and the time)."""
    return {key: value for key, value in answer.items() if key not in ("id", "identifier", "created")}


async def test_the_library_answers_what_http_answers(fake: FakeOpenAI, tmp_path: Path) -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "same answer"}], "seed": 1}
    streamed = {**chat, "stream": True, "stream_options": {"include_usage": True}}
    embed = {"model": f"fake/{EMBEDDING_MODEL}", "input": ["a", "bb"]}
    async with LibraryClient(gateway_config(fake, storage={"dir": str(tmp_path)})) as client:
        assert client.stack is not None
        async with over_http(client.stack) as session:
            # The same request both ways, the same answer: status and JSON.
            assert await http(session, "GET", "/models") == await library(client.models.list)
            assert await http(session, "POST", "/chat/completions", chat) == await library(
                client.chat.completions.create, **chat
            )
            assert await http(session, "POST", "/chat/completions", streamed) == await library(
                client.chat.completions.create, **streamed
            )
            assert await http(session, "POST", "/completions", {"model": MODEL, "prompt": "p"}) == await library(
                client.completions.create, model=MODEL, prompt="p"
            )
            assert await http(session, "POST", "/embeddings", embed) == await library(client.embeddings.create, **embed)
            registered = await library(client.models.register, id="by-lib", provider_id="fake", provider_model_id="x")
            assert await http(session, "GET", "/models/by-lib") == registered
            assert await http(session, "GET", "/models") == await library(client.models.list)
            over = await http(
                session, "POST", "/models", {"id": "by-http", "provider_id": "fake", "provider_model_id": "x"}
            )
            assert over[0] == registered[0] == 200
            assert without_request_ids(over[1]) == without_request_ids(registered[1])
            assert await library(client.models.retrieve, "by-http") == over
            assert await http(session, "DELETE", "/models/by-http") == (
                200,
                {"id": "by-http", "object": "model", "deleted": True},
            )
            assert await library(client.models.delete, "by-lib") == (
                200,
                {"id": "by-lib", "object": "model", "deleted": True},
            )
            # Errors too: the same status and OpenAI-shaped body.
            assert await http(session, "GET", "/models/by-lib") == await library(client.models.retrieve, "by-lib")
            bad = {"model": MODEL, "messages": "not a list"}
            assert await http(session, "POST", "/chat/completions", bad) == await library(
                client.chat.completions.create, **bad
            )
            assert await http(session, "DELETE", f"/models/{MODEL}") == await library(client.models.delete, MODEL)
