"""The prefix cache: requests sharing a prefix reuse its KV, and get exactly what they get without it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lamina_inference_torch.engine import Engine, Sequence  # noqa: E402
from lamina_inference_torch.prefix_cache import PrefixCache  # noqa: E402
from lamina_inference_torch.sampling import SamplingParams  # noqa: E402
from lamina_inference_torch.tokenizer import load_tokenizer  # noqa: E402
from test_decoder import decoder_for, run_engine  # noqa: E402

SYSTEM = "You are Lamina, a helpful assistant. The quick brown fox jumps over the lazy dog. " * 3
# Where the suite's servers share converted weights (nox sets it), so only the first start converts the model.
WEIGHT_CACHE = Path(os.environ["LAMINA_TEST_WEIGHT_CACHE"]) if "LAMINA_TEST_WEIGHT_CACHE" in os.environ else None
QUESTIONS = ["Paris is the capital of", "def add(a, b):", "café, naïve, 日本語", "numbers 12345 and", "emoji 🎉"]


def conversations(tokenizer) -> list[list[int]]:
    return [
        tokenizer.encode(
            tokenizer.render_chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}], None)
        )
        for q in QUESTIONS
    ]


def test_cached_prefixes_give_the_uncached_tokens_under_continuous_batching(tiny):
    tokenizer = load_tokenizer(tiny.hf_folder, None)
    prompts = conversations(tokenizer)
    greedy = [SamplingParams(temperature=0)] * len(prompts)
    plain = Engine(decoder_for(tiny.hf_folder), tokenizer, threads=1, prefill_chunk=16)
    try:
        expected = [run_engine(plain, [p], greedy[:1], 12)[0]["tokens"] for p in prompts]
    finally:
        plain.close()
    engine = Engine(decoder_for(tiny.hf_folder), tokenizer, threads=1, prefill_chunk=16, prefix_cache_bytes=64 << 20)
    try:
        first = run_engine(engine, prompts[:1], greedy[:1], 12)  # fills the cache with the shared prefix
        assert len(engine.prefix_cache) >= 2
        # The rest all at once, batched with each other: every one starts from the cached blocks.
        sequences_before = engine.prefix_cache.hits
        rest = run_engine(engine, prompts[1:], greedy[1:], 12)
        assert engine.prefix_cache.hits == sequences_before + len(prompts) - 1
        again = run_engine(engine, prompts, greedy, 12)  # whole prompts cached now (but their last token)
    finally:
        engine.close()
    assert [r["tokens"] for r in first + rest] == expected
    assert [r["tokens"] for r in again] == expected
    assert all(len(tokens) >= 3 for tokens in expected)


def test_a_cached_prefix_skips_its_prefill(tiny):
    tokenizer = load_tokenizer(tiny.hf_folder, None)
    prompts = conversations(tokenizer)
    engine = Engine(decoder_for(tiny.hf_folder), tokenizer, threads=1, prefill_chunk=16, prefix_cache_bytes=64 << 20)
    try:
        run_engine(engine, prompts[:1], [SamplingParams(temperature=0)], 4)
        sequence = Sequence(prompts[1], SamplingParams(temperature=0), 4, [], lambda event: None)
        engine.submit(sequence)
        while not sequence.done:
            pass
    finally:
        engine.close()
    shared = next(i for i, (a, b) in enumerate(zip(prompts[0], prompts[1], strict=False)) if a != b)
    block = engine.prefix_cache.block
    assert sequence.cached_tokens == shared // block * block > 0


def test_the_budget_evicts_the_least_recently_used_prefix():
    kv = torch.zeros(2, 2, 1, 4, 8)  # 512 bytes a block of 4 tokens
    cache = PrefixCache(budget_bytes=3 * 512, block=4)
    reads = []

    def read(start: int, end: int) -> torch.Tensor:
        reads.append((start, end))
        return kv.clone()

    a, b = list(range(8)), [100 + t for t in range(8)]
    assert cache.insert(a, 8, read) == 2 and cache.insert(a, 8, read) == 0
    assert len(cache.lookup([*a, 9], 9)) == 2
    assert len(cache.lookup([*a[:4], 50, 51, 52, 53], 8)) == 1  # diverges in the second block
    assert cache.insert(b, 8, read) == 2  # over budget: a's oldest-used block goes, never its first
    assert cache.used <= cache.budget and len(cache) == 3
    assert len(cache.lookup(a, 8)) == 1 and len(cache.lookup(b, 8)) == 2
    assert len(cache.lookup(a, 7)) == 1 and cache.lookup([1, 2, 3], 3) == []


@pytest.mark.skipif(not os.environ.get("LAMINA_TEST_SMOLLM2"), reason="LAMINA_TEST_SMOLLM2 not set")
@pytest.mark.slow
def test_smollm2_cached_and_uncached_greedy_outputs_are_identical(tmp_path):
    from lamina_inference_torch.config import TorchConfig
    from lamina_inference_torch.provider import load_served_model

    path = __import__("pathlib").Path(os.environ["LAMINA_TEST_SMOLLM2"])
    results = {}
    for budget in (0, 256):
        config = TorchConfig(
            models=[str(path)], quantize="none", context_length=1024, max_batch=4, threads=2, prefix_cache_mb=budget
        )
        served = load_served_model(path, config, WEIGHT_CACHE)
        try:
            prompts = conversations(served.tokenizer)[:3]
            greedy = [SamplingParams(temperature=0)] * len(prompts)
            # No deadline to speak of: on a loaded machine a cut-off run would look like a different answer.
            first = run_engine(served.engine, prompts[:1], greedy[:1], 16, timeout=1200)
            rest = run_engine(served.engine, prompts[1:], greedy[1:], 16, timeout=1200)
            assert all(r["finish"] in {"stop", "length"} for r in first + rest)
            results[budget] = [r["tokens"] for r in first + rest]
            if budget:
                assert served.engine.prefix_cache.hits >= len(prompts) - 1
        finally:
            served.engine.close()
    assert results[256] == results[0]


async def test_usage_reports_the_cached_prompt_tokens(tiny):
    from lamina.apis.inference.types import ChatCompletionRequest
    from lamina_inference_torch.config import TorchConfig
    from lamina_inference_torch.provider import create_provider

    config = TorchConfig(models=[str(tiny.hf_folder)], quantize="none", context_length=256, max_batch=2, threads=1)
    provider = await create_provider(config)

    def ask(question: str, **kwargs) -> ChatCompletionRequest:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        return ChatCompletionRequest(model="tiny-llama", messages=messages, max_tokens=4, temperature=0, **kwargs)

    try:
        first = await provider.chat_completion(ask(QUESTIONS[0]))
        second = await provider.chat_completion(ask(QUESTIONS[1]))
        stream = await provider.chat_completion(ask(QUESTIONS[2], stream=True, stream_options={"include_usage": True}))
        streamed = [chunk async for chunk in stream][-1]["usage"]
    finally:
        await provider.close()
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached < second["usage"]["prompt_tokens"] and cached % 32 == 0
    assert streamed["prompt_tokens_details"]["cached_tokens"] == cached


def test_a_follow_up_turn_reuses_the_previous_answer_and_gets_the_uncached_tokens(tiny):
    tokenizer = load_tokenizer(tiny.hf_folder, None)
    prompt = tokenizer.encode(tokenizer.render_chat([{"role": "user", "content": QUESTIONS[0]}], None))
    # Greedy, end of turn kept away: the answer is exactly max_tokens long.
    greedy = SamplingParams(temperature=0, logit_bias=dict.fromkeys(tokenizer.stop_token_ids, -100.0))

    def run(engine: Engine, tokens: list[int], max_tokens: int) -> Sequence:
        answer: list[int] = []
        sequence = Sequence(tokens, greedy, max_tokens, [], lambda e: answer.extend(getattr(e, "tokens", ())))
        engine.submit(sequence)
        while not sequence.done:
            time.sleep(0.005)
        return sequence

    engine = Engine(decoder_for(tiny.hf_folder), tokenizer, threads=1, prefill_chunk=16, prefix_cache_bytes=64 << 20)
    try:
        first = run(engine, prompt, 70)
        # The next turn: the conversation so far, the answer closed, a new user message.
        follow_up = prompt + first.generated + tokenizer.encode("<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n")
        cached = run(engine, follow_up, 12)
    finally:
        engine.close()
    plain = Engine(decoder_for(tiny.hf_folder), tokenizer, threads=1, prefill_chunk=16)
    try:
        uncached = run(plain, follow_up, 12)
    finally:
        plain.close()
    assert len(first.generated) == 70 and len(cached.generated) == 12
    assert cached.generated == uncached.generated
    block = engine.prefix_cache.block
    # Every full block of prompt and answer but the answer's last token (its KV was never computed).
    assert cached.cached_tokens == (len(prompt) + len(first.generated) - 1) // block * block > len(prompt) + block


@pytest.mark.skipif(not os.environ.get("LAMINA_TEST_SMOLLM2"), reason="LAMINA_TEST_SMOLLM2 not set")
@pytest.mark.slow
async def test_smollm2_a_follow_up_turn_counts_the_previous_answer_as_cached():
    from lamina.apis.inference.types import ChatCompletionRequest
    from lamina_inference_torch.config import TorchConfig
    from lamina_inference_torch.provider import create_provider

    path = os.environ["LAMINA_TEST_SMOLLM2"]
    provider = await create_provider(
        TorchConfig(models=[path], context_length=1024, max_batch=2, threads=2, weight_cache=WEIGHT_CACHE or True)
    )
    model = next(iter(provider.models))
    messages = [{"role": "user", "content": "Write a short poem about the sea."}]
    try:
        first = await provider.chat_completion(
            ChatCompletionRequest(model=model, messages=messages, max_tokens=96, temperature=0)
        )
        messages += [
            {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
            {"role": "user", "content": "Now one about mountains."},
        ]
        second = await provider.chat_completion(
            ChatCompletionRequest(model=model, messages=messages, max_tokens=8, temperature=0)
        )
    finally:
        await provider.close()
    seen = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"] - 1
    assert first["usage"]["completion_tokens"] > 64
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == seen // 32 * 32
