"""The `anthropic` client through /v1/messages to the torch engine of the `local` distro, on the real
SmolLM2-135M-Instruct: the translation holds for a provider that makes its answers itself."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

SMOLLM2 = os.environ.get("LAMINA_TEST_SMOLLM2")
# Where the suite's servers share converted weights (nox sets it), so only the first start converts the model.
WEIGHT_CACHE = os.environ.get("LAMINA_TEST_WEIGHT_CACHE", True)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SMOLLM2, reason="set LAMINA_TEST_SMOLLM2 to SmolLM2-135M-Instruct's GGUF"),
]
anthropic = pytest.importorskip("anthropic")

MODEL = "torch/SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "top_k": 1}


@pytest.fixture(scope="module")
def client() -> Iterator[anthropic.Anthropic]:
    from lamina.testing import serve

    torch_config = {"models": [SMOLLM2], "context_length": 512, "threads": 2, "weight_cache": WEIGHT_CACHE}
    config = {"providers": {"inference": [{"id": "torch", "type": "inline::torch", "config": torch_config}]}}
    with serve(config) as url:
        yield anthropic.Anthropic(base_url=url.removesuffix("/v1"), api_key="unused", max_retries=0, timeout=120)


def test_message_streamed_and_not_agree(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=24, system="Answer in one sentence.", messages=QUESTION, extra_body=GREEDY
    )
    [block] = message.content
    assert block.type == "text" and "Paris" in block.text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 10 and 0 < message.usage.output_tokens <= 24
    with client.messages.stream(
        model=MODEL, max_tokens=24, system="Answer in one sentence.", messages=QUESTION, extra_body=GREEDY
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == block.text
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == (
        message.stop_reason,
        message.usage.input_tokens,
        message.usage.output_tokens,
    )
    counted = client.messages.count_tokens(model=MODEL, system="Answer in one sentence.", messages=QUESTION)
    assert counted.input_tokens == message.usage.input_tokens


def test_max_tokens_and_multi_turn(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=3,
        messages=[
            *QUESTION,
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "Now write a long story about it."},
        ],
        extra_body=GREEDY,
    )
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 3)


def test_unknown_model_is_an_anthropic_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="torch/nope", max_tokens=3, messages=QUESTION)
