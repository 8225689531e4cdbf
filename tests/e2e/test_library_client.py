"""The in-process library client: the same answers as over HTTP, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_helpers import gateway_config
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI, vector_for
from lamina import LaminaError
from lamina.apis.inference.types import decode_base64
from lamina.client import LibraryClient

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

        ids = {m["id"] for m in await client.models.list()}
        assert {MODEL, f"fake/{EMBEDDING_MODEL}"} <= ids
        registered = await client.models.register(id="lib-alias", provider_id="fake", provider_model_id=CHAT_MODEL)
        assert registered["source"] == "registered"
        assert (await client.models.retrieve("lib-alias"))["provider_model_id"] == CHAT_MODEL
        aliased = await client.chat.completions.create(model="lib-alias", messages=[{"role": "user", "content": "q"}])
        assert aliased["model"] == "lib-alias"
        await client.models.delete("lib-alias")

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
