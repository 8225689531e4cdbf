"""The stack's guardrails apply to responses as to chat: the orchestrator calls the inference router's chat
completions, so each model call's input (the user's message, or a tool's output) and output are judged."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import lamina
import openai
import pytest
from lamina.apis.inference.types import ChatMessage
from lamina.guardrails import Guardrail, GuardrailViolation
from lamina.plugins import make_plugin_manager
from lamina.testing import serve
from openai import OpenAI
from responses_helpers import MODEL, responses_config
from scripted_upstream import ScriptedUpstream


class FruitGuardrail(Guardrail):
    """Blocks inputs about bananas; cuts answers that mention cherries."""

    name = "fruit"
    output_check_chars = 10

    async def check_input(self, messages: list[ChatMessage]) -> GuardrailViolation | None:
        if "banana" in messages[-1].text:
            return GuardrailViolation(guardrail=self.name, message="no bananas", categories=["fruit/banana"])
        return None

    async def check_output(self, messages: list[ChatMessage], text: str) -> GuardrailViolation | None:
        return GuardrailViolation(guardrail=self.name, message="cherry") if "cherry" in text else None


@pytest.fixture(scope="module")
def guarded(upstream_server: ScriptedUpstream) -> Iterator[OpenAI]:
    async def create(deps: Any) -> list[Guardrail]:
        return [FruitGuardrail()]

    plugin = types.ModuleType("fruit_responses_plugin")
    plugin.register_guardrails = lamina.hookimpl(lambda: [lamina.GuardrailSpec(name="fruit", create=create)])  # type: ignore[attr-defined]
    pm = make_plugin_manager()
    pm.register(plugin, "fruit_responses_plugin")
    with serve(responses_config(upstream_server), pm=pm) as url:
        yield OpenAI(base_url=url, api_key="unused", max_retries=0)


WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def test_blocked_input_is_400(guarded: OpenAI, upstream: ScriptedUpstream) -> None:
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            guarded.responses.create(model=MODEL, input="a banana please", stream=stream)
        assert caught.value.code == "content_policy_violation"
    assert upstream.chats() == []


def test_a_tool_output_is_judged_too(guarded: OpenAI, upstream: ScriptedUpstream) -> None:
    asked = guarded.responses.create(model=MODEL, input="weather?", tools=[WEATHER])
    call = asked.output[0]
    assert call.type == "function_call"
    with pytest.raises(openai.BadRequestError):
        guarded.responses.create(
            model=MODEL,
            previous_response_id=asked.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "banana weather"}],
            tools=[WEATHER],
        )


@pytest.mark.parametrize("stream", [False, True])
def test_a_cut_answer_ends_incomplete(guarded: OpenAI, stream: bool) -> None:
    if stream:
        with guarded.responses.stream(model=MODEL, input="cherry pie") as events:
            seen = list(events)
        assert seen[-1].type == "response.incomplete"
        assert "response.output_text.delta" not in [event.type for event in seen]  # held back, then cut
        response = seen[-1].response
    else:
        response = guarded.responses.create(model=MODEL, input="cherry pie")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "content_filter"
    assert "cherry" not in response.output_text
    assert guarded.responses.retrieve(response.id).status == "incomplete"
