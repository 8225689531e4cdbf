"""The register_guardrails hook: a third-party guardrail installed on chat completions, and the chain's rules."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator
from typing import Any

import lamina
import openai
import pytest
from lamina.apis.inference.types import ChatCompletionRequest, ChatMessage
from lamina.guardrails import Guardrail, GuardrailChain, GuardrailViolation
from lamina.plugins import make_plugin_manager
from lamina.testing import serve
from openai import OpenAI


class FruitGuardrail(Guardrail):
    """Blocks inputs about bananas; cuts answers at the first cherry."""

    name = "fruit"
    output_check_chars = 10

    async def check_input(self, messages: list[ChatMessage]) -> GuardrailViolation | None:
        if "banana" in messages[-1].text:
            return GuardrailViolation(guardrail=self.name, message="no bananas", categories=["fruit/banana"])
        return None

    async def check_output(self, messages: list[ChatMessage], text: str) -> GuardrailViolation | None:
        return GuardrailViolation(guardrail=self.name, message="cherry") if "cherry" in text else None


def test_a_plugin_guardrail_applies_to_every_chat_completion(stack_config: Any) -> None:
    async def create(stack: Any) -> list[Guardrail]:
        return [FruitGuardrail()]

    plugin = types.ModuleType("fruit_plugin")
    plugin.register_guardrails = lamina.hookimpl(lambda: [lamina.GuardrailSpec(name="fruit", create=create)])  # type: ignore[attr-defined]
    pm = make_plugin_manager()
    pm.register(plugin, "fruit_plugin")
    with serve(stack_config(), pm=pm) as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="up/chat", messages=[{"role": "user", "content": "a banana please"}])
        assert caught.value.code == "content_policy_violation" and "fruit/banana" in caught.value.message
        chunks = client.chat.completions.create(
            model="up/chat",
            messages=[{"role": "user", "content": "say: apple, pear, cherry, plum and fig"}],
            stream=True,
        )
        pieces = [(c.choices[0].delta.content or "", c.choices[0].finish_reason) for c in chunks if c.choices]
        text = "".join(p for p, _ in pieces)
        assert pieces[-1][1] == "content_filter" and "cherry" not in text and text.startswith("apple")


def run_chain(guardrails: list[Guardrail], chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async def call(request: ChatCompletionRequest) -> AsyncIterator[dict[str, Any]]:
        async def stream() -> AsyncIterator[dict[str, Any]]:
            for chunk in chunks:
                yield chunk

        return stream()

    async def main() -> list[dict[str, Any]]:
        request = ChatCompletionRequest(model="m", messages=[ChatMessage(role="user", content="hi")], stream=True)
        result = await GuardrailChain(guardrails).chat(request, call)
        return [chunk async for chunk in result]  # type: ignore[union-attr]

    return asyncio.run(main())


def chunk(index: int, content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    return {
        "id": "c",
        "model": "m",
        "created": 1,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def test_every_choice_is_judged_and_a_cut_ends_them_all() -> None:
    chunks = [
        chunk(0, "an apple "),
        chunk(1, "a pear "),
        chunk(0, "and a cherry"),
        chunk(1, "and a plum"),
        chunk(0, finish="stop"),
        chunk(1, finish="stop"),
    ]
    out = run_chain([FruitGuardrail()], chunks)
    finals = out[-1]["choices"]
    assert [c["finish_reason"] for c in finals] == ["content_filter", "content_filter"]
    assert "cherry" not in str(out[:-1])


def test_text_that_never_reaches_a_checkpoint_is_judged_at_the_end() -> None:
    class Patient(FruitGuardrail):
        output_check_chars = 10_000

    out = run_chain([Patient()], [chunk(0, "a cherry"), chunk(0, finish="stop")])  # judged when it finishes
    assert [c["choices"] for c in out] == [[{"index": 0, "delta": {}, "finish_reason": "content_filter"}]]
    out = run_chain([Patient()], [chunk(0, "a cherry")])  # a stream that ends without finishing
    assert [c["choices"] for c in out] == [[{"index": 0, "delta": {}, "finish_reason": "content_filter"}]]
    clean = [chunk(0, "an apple"), chunk(0, finish="stop")]
    assert run_chain([Patient()], clean) == clean


def test_redacting_guardrails_each_mask_what_they_find() -> None:
    class Masking(Guardrail):
        on_input_violation = "redact"

        def __init__(self, word: str) -> None:
            self.name, self.word = f"mask-{word}", word

        async def check_input(self, messages: list[ChatMessage]) -> GuardrailViolation | None:
            text = messages[-1].text
            if self.word not in text:
                return None
            return GuardrailViolation(guardrail=self.name, message=self.word, redacted=text.replace(self.word, "***"))

    seen: list[str] = []

    async def call(request: ChatCompletionRequest) -> dict[str, Any]:
        seen.append(request.messages[-1].text)
        return {"choices": []}

    request = ChatCompletionRequest(model="m", messages=[ChatMessage(role="user", content="apple and cherry")])
    asyncio.run(GuardrailChain([Masking("apple"), Masking("cherry")]).chat(request, call))
    assert seen == ["*** and ***"]
