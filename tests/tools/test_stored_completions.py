"""Stored chat completions (`store: true`) through the official openai client: list, filter, paginate, retrieve,
update, delete, messages, streaming, and surviving a restart of the server on the same data directory."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
import requests
from e2e_helpers import assert_openai_error
from fake_openai import CHAT_MODEL, TOOL_ARGUMENTS, FakeOpenAI
from lamina.testing import serve

MODEL = f"fake/{CHAT_MODEL}"


def config(fake: FakeOpenAI, data_dir: Path) -> dict[str, object]:
    return {
        "providers": {"inference": [{"id": "fake", "type": "remote::openai", "config": {"base_url": fake.base_url}}]},
        "storage": {"dir": str(data_dir)},
    }


def ask(client: openai.OpenAI, text: str, **extra: object) -> str:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], store=True, **extra
    )
    return completion.id


def test_store_list_filter_paginate_update_delete_and_restart(fake: FakeOpenAI, tmp_path: Path) -> None:
    with serve(config(fake, tmp_path)) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused")
        first = ask(client, "one", metadata={"team": "red"})
        second = ask(client, "two", metadata={"team": "blue"})
        third = ask(client, "three", metadata={"team": "red", "tier": "gold"})
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "not kept"}])
        assert "store" not in fake.requests[-1]  # Lamina stores; the upstream is not asked to

        listed = client.chat.completions.list()
        assert [c.id for c in listed.data] == [first, second, third]
        assert listed.data[0].choices[0].message.content == "echo: one"
        assert [c.id for c in client.chat.completions.list(order="desc").data] == [third, second, first]
        assert [c.id for c in client.chat.completions.list(metadata={"team": "red"}).data] == [first, third]
        gold = client.chat.completions.list(metadata={"team": "red", "tier": "gold"})
        assert [c.id for c in gold.data] == [third]
        assert client.chat.completions.list(model="fake/other").data == []
        assert len(client.chat.completions.list(model=MODEL).data) == 3

        page = client.chat.completions.list(limit=2)
        assert [c.id for c in page.data] == [first, second] and page.has_more
        # The SDK's auto-pagination follows `after` with the last id of each page.
        assert [c.id for c in client.chat.completions.list(limit=1)] == [first, second, third]

        retrieved = client.chat.completions.retrieve(second)
        assert retrieved.choices[0].message.content == "echo: two" and retrieved.metadata == {"team": "blue"}
        updated = client.chat.completions.update(second, metadata={"team": "green"})
        assert updated.metadata == {"team": "green"}
        assert [c.id for c in client.chat.completions.list(metadata={"team": "green"}).data] == [second]

        messages = client.chat.completions.messages.list(third)
        assert [(m.role, m.content) for m in messages.data] == [("user", "three")]
        assert messages.data[0].id == f"{third}-0"

        deleted = client.chat.completions.delete(first)
        assert deleted.deleted and deleted.id == first
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.retrieve(first)

    with serve(config(fake, tmp_path)) as base_url:  # the same data directory: everything stored is still there
        client = openai.OpenAI(base_url=base_url, api_key="unused")
        assert [c.id for c in client.chat.completions.list().data] == [second, third]
        assert client.chat.completions.retrieve(second).metadata == {"team": "green"}


def test_stream_is_stored_assembled(fake: FakeOpenAI, tmp_path: Path) -> None:
    with serve(config(fake, tmp_path)) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused")
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "stream me please"}]},
        ]
        stream = client.chat.completions.create(
            model=MODEL, messages=messages, store=True, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        stored = client.chat.completions.retrieve(chunks[0].id)
        assert stored.choices[0].message.content == streamed == "echo: stream me please"
        assert stored.choices[0].finish_reason == "stop" and stored.usage is not None
        listed = client.chat.completions.messages.list(stored.id, order="desc")
        assert [m.role for m in listed.data] == ["user", "system"]
        assert listed.data[0].content == "stream me please" and listed.data[0].content_parts is not None
        second_page = client.chat.completions.messages.list(stored.id, limit=1, after=f"{stored.id}-0")
        assert [m.content for m in second_page.data] == ["stream me please"]


def test_bad_input_and_unknown_ids(fake: FakeOpenAI, tmp_path: Path) -> None:
    with serve(config(fake, tmp_path)) as base_url:
        missing = "chatcmpl-nope"
        for method, path in [
            ("GET", f"/chat/completions/{missing}"),
            ("DELETE", f"/chat/completions/{missing}"),
            ("GET", f"/chat/completions/{missing}/messages"),
        ]:
            assert_openai_error(requests.request(method, base_url + path, timeout=10), 404, param="completion_id")
        response = requests.post(f"{base_url}/chat/completions/{missing}", json={"metadata": {"a": "b"}}, timeout=10)
        assert_openai_error(response, 404, param="completion_id")
        response = requests.get(f"{base_url}/chat/completions", params={"limit": 0}, timeout=10)
        assert_openai_error(response, 400, param="limit")
        response = requests.get(f"{base_url}/chat/completions", params={"order": "up"}, timeout=10)
        assert_openai_error(response, 400, param="order")
        response = requests.get(f"{base_url}/chat/completions", params={"after": missing}, timeout=10)
        assert_openai_error(response, 404, param="completion_id")
        stored = requests.post(
            f"{base_url}/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "store": True},
            timeout=10,
        ).json()
        response = requests.post(f"{base_url}/chat/completions/{stored['id']}", json={"metadata": {"a": 1}}, timeout=10)
        assert_openai_error(response, 400, param="metadata.a")
        too_many = {f"k{i}": "v" for i in range(17)}
        response = requests.post(f"{base_url}/chat/completions/{stored['id']}", json={"metadata": too_many}, timeout=10)
        assert_openai_error(response, 400, param="metadata")
        response = requests.post(
            f"{base_url}/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "store": "yes"},
            timeout=10,
        )
        assert_openai_error(response, 400, param="store")


def test_streamed_tool_calls_are_assembled_per_choice(fake: FakeOpenAI, tmp_path: Path) -> None:
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    with serve(config(fake, tmp_path)) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused")
        chunks = list(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[tool], n=2, stream=True, store=True
            )
        )
        stored = client.chat.completions.retrieve(chunks[0].id)
        assert [c.index for c in stored.choices] == [0, 1]
        for index, choice in enumerate(stored.choices):
            assert choice.finish_reason == "tool_calls"
            [call] = choice.message.tool_calls or []
            assert (call.id, call.function.name, call.function.arguments) == (
                f"call_{index}",
                "weather",
                TOOL_ARGUMENTS,
            )


def test_a_stream_the_client_leaves_is_not_stored(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.reset()
    fake.stream_delay = 0.2
    try:
        with serve(config(fake, tmp_path)) as base_url:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "one two three four five six seven"}],
                "stream": True,
                "store": True,
            }
            with requests.post(f"{base_url}/chat/completions", json=body, stream=True, timeout=10) as response:
                assert next(response.iter_lines()).startswith(b"data: ")
            assert fake.disconnected.wait(10)  # Lamina stopped the upstream's stream when the client left
            time.sleep(0.5)
            assert requests.get(f"{base_url}/chat/completions", timeout=10).json()["data"] == []
    finally:
        fake.reset()
