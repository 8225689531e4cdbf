"""`truncation`: a context longer than the model's window loses its oldest turns with "auto" (never the
instructions, never the last user message) and is a 400 `context_length_exceeded` naming the limits with
"disabled". The window is declared (a model alias's `context_length`) or learnt from the upstream's refusal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from lamina.testing import serve
from openai import OpenAI
from responses_helpers import MODEL, responses_config
from scripted_upstream import ScriptedUpstream, text_of

SMALL = "small-window"  # an alias of the scripted model declaring a small context window
WINDOW = 300
INSTRUCTIONS = "Answer briefly."


@pytest.fixture(scope="module")
def small_window_url(upstream_server: ScriptedUpstream) -> Iterator[str]:
    alias = {
        "id": SMALL,
        "provider_id": "up",
        "provider_model_id": "gpt-scripted",
        "metadata": {"context_length": WINDOW},
    }
    with serve(responses_config(upstream_server, inference={"models": [alias]})) as url:
        yield url


def turn(i: int) -> str:
    return f"turn{i} " + "lorem " * 20


def chain(client: OpenAI, model: str, turns: int) -> str:
    """`turns` responses chained by previous_response_id (truncated as needed); the last one's id."""
    previous = None
    for i in range(turns):
        previous = client.responses.create(
            model=model, input=turn(i), instructions=INSTRUCTIONS, previous_response_id=previous, truncation="auto"
        ).id
    assert previous is not None
    return previous


def received(body: dict[str, Any]) -> list[str]:
    return [text_of(m.get("content")) for m in body["messages"]]


def check_truncated(texts: list[str], last_input: str) -> None:
    assert texts[0] == INSTRUCTIONS  # the instructions stay
    assert texts[-1] == last_input  # and the last user message
    assert not any("turn0 " in text for text in texts)  # the oldest turn went
    assert texts[1].startswith("turn")  # what is kept starts at a user message


def test_auto_drops_the_oldest_turns_to_fit_a_declared_window(
    small_window_url: str, upstream: ScriptedUpstream
) -> None:
    client = OpenAI(base_url=small_window_url, api_key="unused", max_retries=0)
    last = chain(client, SMALL, 5)
    answer = client.responses.create(
        model=SMALL, input=turn(5), instructions=INSTRUCTIONS, previous_response_id=last, truncation="auto"
    )
    assert answer.status == "completed" and answer.output_text.startswith("echo: turn5")
    texts = received(upstream.chats()[-1])
    check_truncated(texts, turn(5))
    assert len(texts) < 2 + 2 * 5  # instructions + 5 earlier turns + the new input, had nothing been dropped
    assert len(texts) >= 4  # and not more than needed: earlier turns that fit are kept
    assert not upstream.refused  # the declared window was enough; the model never refused


def test_disabled_refuses_a_context_over_the_declared_window(small_window_url: str, upstream: ScriptedUpstream) -> None:
    client = OpenAI(base_url=small_window_url, api_key="unused", max_retries=0)
    last = chain(client, SMALL, 5)
    calls = len(upstream.chats())
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=SMALL, input=turn(5), previous_response_id=last)  # truncation: disabled
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "context_length_exceeded" and body["param"] == "input"
    assert f"{WINDOW}-token context window" in body["message"] and SMALL in body["message"]
    assert len(upstream.chats()) == calls  # refused before any model call


def test_auto_retries_with_fewer_turns_when_the_upstream_says_too_long(
    client: OpenAI, upstream: ScriptedUpstream
) -> None:
    last = chain(client, MODEL, 3)  # the window is unknown here: the upstream's refusal tells
    upstream.context_window = 120
    answer = client.responses.create(
        model=MODEL, input=turn(3), instructions=INSTRUCTIONS, previous_response_id=last, truncation="auto"
    )
    assert answer.status == "completed" and answer.output_text.startswith("echo: turn3")
    assert upstream.refused  # it was refused first, then asked again with less
    texts = received(upstream.chats()[-1])
    check_truncated(texts, turn(3))
    assert len(texts) < len(received(upstream.refused[0]))


def test_disabled_passes_the_upstreams_refusal_on_as_context_length_exceeded(
    client: OpenAI, upstream: ScriptedUpstream
) -> None:
    last = chain(client, MODEL, 3)
    upstream.context_window = 120
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input=turn(3), previous_response_id=last)
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "context_length_exceeded"
    assert "maximum context length is 120 tokens" in body["message"] and '"truncation": "auto"' in body["message"]


def test_auto_cannot_drop_the_last_message(client: OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.context_window = 10
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input=turn(0), truncation="auto", stream=True)
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "context_length_exceeded"
    assert len(upstream.refused) == 1  # nothing left to drop: one try
