"""inline::torch on the real SmolLM2-135M-Instruct, through the real server and the official openai client."""

from __future__ import annotations

import asyncio
import os

import pytest

SMOLLM2 = os.environ.get("LAMINA_TEST_SMOLLM2")
# Where the suite's servers share converted weights (nox sets it), so only the first start converts the model.
WEIGHT_CACHE = os.environ.get("LAMINA_TEST_WEIGHT_CACHE", True)
pytestmark = pytest.mark.skipif(
    not SMOLLM2,
    reason="set LAMINA_TEST_SMOLLM2 to SmolLM2-135M-Instruct's GGUF (e.g. `lamina models pull SmolLM2-135M-Instruct`) "
    "to run the real-model tests",
)
openai = pytest.importorskip("openai")

CONTEXT = 512
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def base_url():
    from lamina.testing import serve

    # Correctness runs in float32 without quantization; the context cap keeps the KV cache small.
    torch_config = {
        "models": [SMOLLM2],
        "quantize": "none",
        "context_length": CONTEXT,
        "threads": 2,
        "weight_cache": WEIGHT_CACHE,
    }
    config = {"providers": {"inference": [{"id": "torch", "type": "inline::torch", "config": torch_config}]}}
    with serve(config) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def aclient(base_url):
    return openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


MODEL = "torch/SmolLM2-135M-Instruct"


def test_lists_the_model(client):
    assert MODEL in [m.id for m in client.models.list().data]


def test_answers_a_simple_question(client):
    answer = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=30)
    choice = answer.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"
    assert answer.usage.prompt_tokens > 10 and 0 < answer.usage.completion_tokens <= 30


def test_seeded_sampling_is_reproducible(client):
    def sample(seed: int) -> str:
        messages = [{"role": "user", "content": "Tell me a short story about a cat."}]
        answer = client.chat.completions.create(
            model=MODEL, messages=messages, temperature=1.0, top_p=0.95, seed=seed, max_tokens=24
        )
        return answer.choices[0].message.content

    first = sample(1234)
    assert sample(1234) == first
    assert len({first, sample(1), sample(2)}) > 1


def test_streaming_gives_the_same_text_and_usage(client):
    kwargs = {"model": MODEL, "messages": QUESTION, "temperature": 0, "max_tokens": 40}
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_stop_sequence_cuts_before_it(client):
    kwargs = {"model": MODEL, "messages": QUESTION, "temperature": 0, "max_tokens": 30}
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    stop = full.split()[3]
    cut = client.chat.completions.create(**kwargs, stop=[stop]).choices[0]
    assert cut.message.content == full[: full.index(stop)]
    assert cut.finish_reason == "stop"
    streamed = client.chat.completions.create(**kwargs, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == cut.message.content


def test_max_tokens_finishes_with_length_and_logprobs(client):
    answer = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=5, logprobs=True, top_logprobs=3, temperature=0
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "length" and answer.usage.completion_tokens == 5
    entries = choice.logprobs.content
    assert len(entries) == 5 and all(len(e.top_logprobs) == 3 for e in entries)
    assert all(e.logprob <= 0 and e.logprob == pytest.approx(e.top_logprobs[0].logprob) for e in entries)
    assert "".join(e.token for e in entries) == choice.message.content


def test_text_completion_and_n(client):
    answer = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert answer.choices[0].text and answer.usage.completion_tokens <= 8
    several = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, n=3, seed=5)
    assert [c.index for c in several.choices] == [0, 1, 2]


async def test_eight_concurrent_streams_all_finish(aclient):
    messages = [{"role": "user", "content": "List three fruits."}]

    async def stream(seed: int) -> tuple[str, str, int]:
        chunks = await aclient.chat.completions.create(
            model=MODEL,
            messages=messages,
            temperature=0.8,
            seed=seed,
            max_tokens=32,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, used = "", None, 0
        async for chunk in chunks:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                used = chunk.usage.completion_tokens
        return text, finish, used

    together = await asyncio.gather(*(stream(seed) for seed in range(8)))
    for text, finish, used in together:
        assert text.strip() and finish in {"stop", "length"} and 0 < used <= 32
    # The same seed alone gives the same text: other requests in the batch don't change a sequence.
    alone = [await stream(seed) for seed in (0, 5)]
    assert [a[0] for a in alone] == [together[0][0], together[5][0]]
    await aclient.close()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"messages": [{"role": "user", "content": "word " * 2000}]}, "context"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"temperature": 3.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"extra_body": {"top_k": -1}}, "top_k"),
        ({"extra_body": {"min_p": 2}}, "min_p"),
        ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty"),
    ],
)
def test_bad_input_is_a_400(client, kwargs, fragment):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**{"model": MODEL, "messages": QUESTION, **kwargs})
    assert raised.value.status_code == 400
    assert fragment in str(raised.value)


def test_embeddings_are_refused(client):
    with pytest.raises(openai.BadRequestError, match="embeddings"):
        client.embeddings.create(model=MODEL, input="hello")
