"""remote::anthropic against recorded upstream exchanges (lamina.recording), so CI runs it with no upstream.

By default the exchanges in recordings/ are replayed. To re-record them:

    LAMINA_RECORDING=record pytest plugins/remote-anthropic/tests/test_remote_anthropic_recorded.py

which records against fake_anthropic.py, or, with `LAMINA_RECORDING_UPSTREAM=https://api.anthropic.com`,
`ANTHROPIC_API_KEY` and `LAMINA_RECORDING_MODEL` (e.g. claude-haiku-4-5) set, against Anthropic itself.
`LAMINA_RECORDING=live` runs the same tests against the upstream without writing anything. The assertions hold
for any upstream that follows the instructions the prompts give.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fake_anthropic import API_KEY, FakeAnthropic
from lamina.recording import Recorder
from lamina.testing import serve

RECORDINGS = Path(__file__).parent / "recordings"
MODE = os.environ.get("LAMINA_RECORDING", "replay")


def recorded_model() -> str:
    """The model the recordings were made with, so that replaying needs no setting."""
    for path in sorted(RECORDINGS.glob("*.json")):
        model: str = json.loads(path.read_text())["exchanges"][0]["request"]["body"]["model"]
        return model
    return "claude-fake-1"


UPSTREAM_MODEL = os.environ.get("LAMINA_RECORDING_MODEL") or (recorded_model() if MODE == "replay" else "claude-fake-1")
MODEL = f"claude/{UPSTREAM_MODEL}"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str | None, str]]:
    """The upstream's URL and key: none when replaying, the fake or LAMINA_RECORDING_UPSTREAM otherwise."""
    if MODE == "replay":
        yield None, "unused"
    elif os.environ.get("LAMINA_RECORDING_UPSTREAM"):
        yield os.environ["LAMINA_RECORDING_UPSTREAM"], os.environ["ANTHROPIC_API_KEY"]
    else:
        with FakeAnthropic() as fake:
            yield fake.base_url, API_KEY


@pytest.fixture
def client(request: pytest.FixtureRequest, upstream: tuple[str | None, str]) -> Iterator[openai.OpenAI]:
    url, key = upstream
    recording = RECORDINGS / f"{request.node.name}.json"
    with Recorder(recording, upstream=url, match_headers=("anthropic-version",)) as recorder:
        config = {"base_url": recorder.url, "api_key": key, "models": [UPSTREAM_MODEL], "max_retries": 0}
        with serve(
            {"providers": {"inference": [{"id": "claude", "type": "remote::anthropic", "config": config}]}}
        ) as base:
            yield openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)


def test_recorded_chat(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        max_tokens=20,
        messages=[{"role": "system", "content": "Answer with one word."}, {"role": "user", "content": "Say pong"}],
    )
    assert "pong" in (reply.choices[0].message.content or "").lower()
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


def test_recorded_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            max_tokens=20,
            messages=[{"role": "user", "content": "Say pong"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "pong" in text.lower()
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_recorded_tool_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "What is the weather in Paris? Use the tool."}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    [call] = reply.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"
    assert reply.choices[0].finish_reason == "tool_calls"
