"""inline::echo tested twice: its factory called directly with a real `Deps`, and served over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import lamina
from lamina.apis.inference.types import ChatCompletionRequest
from lamina.storage.sqlite import SQLiteStorageConfig, open_storage
from lamina.testing import serve
from lamina_example import EchoConfig, create
from openai import OpenAI


def test_the_provider_alone(tmp_path: Path) -> None:
    async def main() -> dict:
        storage = await open_storage(SQLiteStorageConfig(), tmp_path)
        try:
            deps = lamina.Deps(apis={}, provider_id="echo", data_dir=tmp_path, storage=storage)
            echo = await create(EchoConfig(prefix="> "), deps)
            request = ChatCompletionRequest(model="echo-1", messages=[{"role": "user", "content": "hi"}])
            return await echo.chat_completion(request)
        finally:
            await storage.close()

    assert asyncio.run(main())["choices"][0]["message"]["content"] == "> hi"


CONFIG = {"providers": {"inference": [{"id": "echo", "type": "inline::echo", "config": {"prefix": "> "}}]}}


def test_served() -> None:
    with serve(CONFIG) as base_url:  # a real server on 127.0.0.1 and a free port; `async with` works too
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="echo/echo-1", messages=[{"role": "user", "content": "hi"}])
        chunks = client.chat.completions.create(
            model="echo/echo-1", messages=[{"role": "user", "content": "one two"}], stream=True
        )
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert reply.choices[0].message.content == "> hi"
    assert streamed == "> one two"
