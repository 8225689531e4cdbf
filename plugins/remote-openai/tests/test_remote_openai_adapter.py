"""remote::openai on its own: config, model listing, relaying, retries and errors, against the fake upstream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI, vector_for
from lamina import Deps, LaminaError, UpstreamError
from lamina.apis.inference.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from lamina.plugins import make_plugin_manager, provider_specs
from lamina_remote_openai import OpenAIConfig, create
from pydantic import ValidationError


@pytest.fixture
async def make_adapter(tmp_path: Path) -> AsyncIterator[Any]:
    made = []

    async def make(**config: Any) -> Any:
        adapter = await create(OpenAIConfig(**config), Deps(apis={}, provider_id="up", data_dir=tmp_path, storage=None))  # type: ignore[arg-type]
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.close()


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_registered_with_its_package() -> None:
    spec = provider_specs(make_plugin_manager())["remote::openai"]
    assert (spec.api, spec.config, spec.package, spec.version) == (
        "inference",
        OpenAIConfig,
        "lamina-remote-openai",
        "0.1.0",
    )


def test_loading_the_plugin_does_not_import_aiohttp() -> None:
    code = "import sys, lamina_remote_openai; print('aiohttp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_config() -> None:
    assert OpenAIConfig(preset="ollama").base_url == "http://localhost:11434/v1"
    assert OpenAIConfig(base_url="http://h:1/v1/").base_url == "http://h:1/v1"
    assert OpenAIConfig(preset="vllm", base_url="http://other/v1").base_url == "http://other/v1"
    with pytest.raises(ValidationError, match="base_url"):
        OpenAIConfig()
    with pytest.raises(ValidationError, match="extra"):
        OpenAIConfig(base_url="http://h/v1", base_ulr="typo")
    with pytest.raises(ValidationError):
        OpenAIConfig(base_url="http://h/v1", max_retries=-1)
    assert "sk-1" not in repr(OpenAIConfig(base_url="http://h/v1", api_key="sk-1"))


async def test_list_models_from_upstream_and_from_config(make_adapter: Any, upstream: FakeOpenAI) -> None:
    adapter = await make_adapter(base_url=upstream.base_url)
    models = {m.id: m.model_type for m in await adapter.list_models()}
    assert models == {CHAT_MODEL: "llm", EMBEDDING_MODEL: "embedding"}
    fixed = await make_adapter(base_url=upstream.base_url, models=["a", "b"], embedding_models=["b"])
    upstream.reset()
    assert [(m.id, m.model_type) for m in await fixed.list_models()] == [("a", "llm"), ("b", "embedding")]
    assert upstream.requests == []  # configured models: the upstream is not asked


async def test_chat_headers_and_payload(make_adapter: Any, upstream: FakeOpenAI) -> None:
    adapter = await make_adapter(base_url=upstream.base_url, api_key="sk-abc", headers={"X-Team": "blue"})
    reply = await adapter.chat_completion(chat(seed=1, custom_field={"a": 1}))
    assert reply["choices"][0]["message"]["content"] == "echo: hi"
    [sent] = upstream.hits("/v1/chat/completions")
    assert sent["headers"]["Authorization"] == "Bearer sk-abc" and sent["headers"]["X-Team"] == "blue"
    # None fields are left out; unknown fields go through untouched.
    assert sent["body"] == {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 1,
        "custom_field": {"a": 1},
    }
    anonymous = await make_adapter(base_url=upstream.base_url, api_key="")
    await anonymous.chat_completion(chat())
    assert "Authorization" not in upstream.hits("/v1/chat/completions")[-1]["headers"]


async def test_stream_relay_and_early_close(make_adapter: Any, upstream: FakeOpenAI) -> None:
    adapter = await make_adapter(base_url=upstream.base_url)
    chunks = [c async for c in await adapter.chat_completion(chat(stream=True))]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "echo: hi"
    assert upstream.streams_finished == 1

    upstream.stream_delay = 0.1
    request = chat(stream=True, messages=[{"role": "user", "content": "x " * 50}])
    stream = await adapter.chat_completion(request)
    await anext(stream)
    await stream.aclose()  # the consumer stops: the upstream connection must be cut, not drained
    assert await asyncio.to_thread(upstream.disconnected.wait, 2.0)
    assert upstream.streams_finished == 1


async def test_completion_and_embeddings(make_adapter: Any, upstream: FakeOpenAI) -> None:
    adapter = await make_adapter(base_url=upstream.base_url)
    done = await adapter.completion(CompletionRequest(model=CHAT_MODEL, prompt="p q"))
    assert done["choices"][0]["text"] == "completed: p q"
    embedded = await adapter.embeddings(EmbeddingRequest(model=EMBEDDING_MODEL, input=["u"], dimensions=3))
    assert embedded["data"][0]["embedding"] == vector_for("u", 3)


async def test_retries_then_502(make_adapter: Any, upstream: FakeOpenAI) -> None:
    adapter = await make_adapter(base_url=upstream.base_url, max_retries=3, retry_backoff=0.01)
    upstream.fail(503)
    with pytest.raises(UpstreamError) as info:
        await adapter.chat_completion(chat())
    assert (info.value.status, info.value.provider_id) == (503, "up")
    assert len(upstream.hits("/v1/chat/completions")) == 4  # a 503 was not acted on: safe to send again
    upstream.reset()
    no_retries = await make_adapter(base_url=upstream.base_url, max_retries=0)
    upstream.fail(500)
    with pytest.raises(UpstreamError):
        await no_retries.chat_completion(chat())
    assert len(upstream.hits("/v1/chat/completions")) == 1


async def test_credentials_rejected_is_502_with_advice(make_adapter: Any, upstream: FakeOpenAI) -> None:
    adapter = await make_adapter(base_url=upstream.base_url)
    upstream.fail(401)
    with pytest.raises(UpstreamError) as info:
        await adapter.chat_completion(chat())
    assert info.value.status == 502 and "api_key" in info.value.message
    assert len(upstream.hits("/v1/chat/completions")) == 1


async def test_not_json_is_502(make_adapter: Any, upstream: FakeOpenAI) -> None:
    adapter = await make_adapter(base_url=upstream.base_url)
    upstream.garbage()
    with pytest.raises(UpstreamError, match="not JSON") as info:
        await adapter.chat_completion(chat())
    assert info.value.status == 502


async def test_read_timeout_is_504(make_adapter: Any, upstream: FakeOpenAI) -> None:
    adapter = await make_adapter(base_url=upstream.base_url, first_byte_timeout=0.3, max_retries=1, retry_backoff=0.01)
    upstream.hang(2)
    started = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        await adapter.chat_completion(chat())
    assert (info.value.status, info.value.code) == (504, "upstream_timeout")
    assert time.monotonic() - started < 1.5
    assert len(upstream.hits("/v1/chat/completions")) == 1  # it may be generating: never sent twice


async def test_backoff(make_adapter: Any, upstream: FakeOpenAI) -> None:
    adapter = await make_adapter(base_url=upstream.base_url, retry_backoff=1.0)
    assert adapter._backoff(0, "2") == 2.0
    assert adapter._backoff(0, "3600") == 3600.0  # the deadline decides whether to wait that long
    assert 0.5 <= adapter._backoff(0, "soon") <= 1.5  # unparseable: exponential with jitter
    assert 2.0 <= adapter._backoff(2, None) <= 6.0


async def test_upstream_4xx_keeps_its_fields(make_adapter: Any, upstream: FakeOpenAI) -> None:
    adapter = await make_adapter(base_url=upstream.base_url)
    upstream.fail(404)
    with pytest.raises(LaminaError) as info:
        await adapter.chat_completion(chat())
    assert info.value.status == 404 and info.value.type == "server_error"
    assert info.value.message == "provider 'up': scripted failure 404"
