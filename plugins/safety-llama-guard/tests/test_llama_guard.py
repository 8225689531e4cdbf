"""inline::llama-guard without a server: the prompt it builds and how it reads verdicts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from lamina.apis.inference.types import ChatCompletionRequest, ChatMessage
from lamina.apis.safety.types import Shield
from lamina.errors import UpstreamError, not_found
from lamina_safety_llama_guard import LlamaGuardConfig
from lamina_safety_llama_guard.provider import LlamaGuardProvider, VerdictError, build_prompt, parse_verdict

SHIELD = Shield(id="guard", provider_id="lg", provider_shield_id="guard")


class FakeInference:
    def __init__(self, answer: str | Exception) -> None:
        self.answer = answer
        self.requests: list[ChatCompletionRequest] = []

    async def chat_completion(self, request: ChatCompletionRequest, *, guarded: bool = True) -> dict[str, Any]:
        # A guardrail's own call must not be guarded in turn (it would judge itself, forever).
        assert guarded is False, "Llama Guard must ask its model with guarded=False"
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": self.answer}}]}


def judge(answer: str | Exception, messages: list[ChatMessage] | None = None, **config: Any):
    inference = FakeInference(answer)
    provider = LlamaGuardProvider(LlamaGuardConfig(model="up/guard", **config), "lg", inference)
    messages = messages or [ChatMessage(role="user", content="hello")]
    return asyncio.run(provider.run_shield(SHIELD, messages, {})), inference


def test_prompt_has_the_taxonomy_the_conversation_and_the_judged_role() -> None:
    messages = [
        ChatMessage(role="system", content="be nice"),
        ChatMessage(role="user", content="How do I bake bread?"),
        ChatMessage(role="assistant", content="Mix flour and water."),
    ]
    prompt = build_prompt(messages, {"S6"})
    assert "Check if there is unsafe content in 'Agent' messages" in prompt
    assert "S1: Violent Crimes.\nS2: Non-Violent Crimes." in prompt and "S14: Code Interpreter Abuse." in prompt
    assert "S6:" not in prompt  # excluded
    assert "User: How do I bake bread?\n\nAgent: Mix flour and water." in prompt
    assert "be nice" not in prompt
    assert prompt.rstrip().endswith("a comma-separated list of violated categories.")
    assert "ONLY THE LAST User message" in build_prompt(messages[:2], set())


@pytest.mark.parametrize(
    ("answer", "codes"),
    [
        ("safe", None),
        ("  \n\nsafe\n", None),
        ("Safe.", None),
        ("unsafe\nS1", ["S1"]),
        ("unsafe\nS10,S11", ["S10", "S11"]),
        ("\n unsafe \n\n S1 , S12 \n", ["S1", "S12"]),
        ("unsafe S4", ["S4"]),
        ("unsafe\ns3", ["S3"]),
        ("unsafe\nS15", ["S15"]),
        ("unsafe", []),
    ],
)
def test_verdicts_in_every_format(answer: str, codes: list[str] | None) -> None:
    assert parse_verdict(answer) == codes


@pytest.mark.parametrize("answer", ["", "   ", "I cannot help with that.", "unsafe\nviolence", "maybe", "safe\nS1"])
def test_garbage_is_an_error_not_a_pass(answer: str) -> None:
    with pytest.raises(VerdictError):
        parse_verdict(answer)


def test_provider_asks_the_configured_model_deterministically() -> None:
    violation, inference = judge("unsafe\nS1,S15")
    request = inference.requests[0]
    assert request.model == "up/guard" and request.temperature == 0 and not request.stream
    assert violation.categories == ["S1", "S15"]
    assert violation.metadata["category_names"] == {"S1": "Violent Crimes", "S15": "S15"}
    assert violation.category_scores == {"S1": 1.0, "S15": 1.0}
    assert "Violent Crimes" in violation.user_message
    assert judge("safe")[0] is None


def test_excluded_categories_are_dropped() -> None:
    assert judge("unsafe\nS6", excluded_categories=["S6"])[0] is None
    violation, _ = judge("unsafe\nS6,S1", excluded_categories=["s6"])
    assert violation.categories == ["S1"]
    assert judge("unsafe", excluded_categories=["S6"])[0].categories == []  # unsafe with no code still counts


def test_garbage_and_upstream_failures_are_502_naming_shield_and_model() -> None:
    with pytest.raises(UpstreamError) as caught:
        judge("Sure! Here is a poem.")
    assert (
        caught.value.status == 502 and "shield 'guard'" in caught.value.message and "up/guard" in caught.value.message
    )
    with pytest.raises(UpstreamError) as caught:
        judge(not_found("model 'up/guard' not found"))
    assert caught.value.status == 502 and "could not ask model 'up/guard'" in caught.value.message
