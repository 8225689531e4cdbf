"""The official `openai` client, sync and async, through Lamina to the fake upstream."""

from __future__ import annotations

import json

import pytest
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, TOOL_ARGUMENTS, FakeOpenAI, vector_for
from lamina.apis.inference.types import decode_base64
from openai import AsyncOpenAI, NotFoundError, OpenAI

MODEL = f"fake/{CHAT_MODEL}"
EMBEDDER = f"fake/{EMBEDDING_MODEL}"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def client(base_url: str) -> OpenAI:
    # No client-side retries: every upstream call a test counts must come from Lamina.
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)


@pytest.fixture
def aclient(base_url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)


def test_chat_non_streaming(client: OpenAI, fake: FakeOpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    )
    assert reply.model == MODEL  # the id the client used, not the upstream's
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (6, 3, 9)
    [sent] = fake.hits("/v1/chat/completions")
    assert sent["body"]["model"] == CHAT_MODEL  # the provider's own id went upstream
    assert sent["headers"]["Authorization"] == "Bearer sk-test-secret-123"


def test_chat_streaming_content_and_usage(client: OpenAI, fake: FakeOpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream these four words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream these four words"
    assert all(c.model == MODEL for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    assert usage_chunks[0].usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
    }
    assert fake.streams_finished == 1


def test_chat_tool_calls(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("call_0", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert reply.model_extra["echo"]["tools"] == [WEATHER_TOOL]


def test_chat_tool_calls_streamed(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL], stream=True
    )
    deltas = [call for chunk in stream if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert deltas[0].id == "call_0" and deltas[0].function.name == "get_weather"
    assert {d.index for d in deltas} == {0}
    assert "".join(d.function.arguments or "" for d in deltas) == TOOL_ARGUMENTS


def test_chat_passes_fields_through(client: OpenAI, fake: FakeOpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        n=2,
        stop=["\n", "END"],
        seed=42,
        temperature=0.3,
        response_format={"type": "json_object"},
        logprobs=True,
        top_logprobs=2,
        extra_body={"guided_regex": "[a-z]+", "repetition_penalty": 1.1, "chat_template_kwargs": {"x": [1]}},
    )
    sent = fake.hits("/v1/chat/completions")[0]["body"]
    expected = {
        "n": 2,
        "stop": ["\n", "END"],
        "seed": 42,
        "temperature": 0.3,
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "top_logprobs": 2,
        "guided_regex": "[a-z]+",
        "repetition_penalty": 1.1,
        "chat_template_kwargs": {"x": [1]},
    }
    assert {key: sent.get(key) for key in expected} == expected
    assert reply.model_extra["echo"]["guided_regex"] == "[a-z]+"
    assert [c.index for c in reply.choices] == [0, 1]
    assert [t.token for t in reply.choices[0].logprobs.content] == ["echo:", "hi"]
    # Fields the client did not set are not invented on the way.
    assert "max_tokens" not in sent and "tools" not in sent


def test_completions(client: OpenAI, fake: FakeOpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="once upon a time", max_tokens=7, echo=False)
    assert reply.choices[0].text == "completed: once upon a time"
    assert reply.model == MODEL
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert fake.hits("/v1/completions")[0]["body"]["max_tokens"] == 7
    streamed = "".join(c.choices[0].text for c in client.completions.create(model=MODEL, prompt="abc", stream=True))
    assert streamed == "completed: abc"


@pytest.mark.parametrize("encoding", ["float", "base64", None])
def test_embeddings(client: OpenAI, fake: FakeOpenAI, encoding: str | None) -> None:
    texts = ["first text", "the second one"]
    extra = {} if encoding is None else {"encoding_format": encoding}
    reply = client.embeddings.create(model=EMBEDDER, input=texts, dimensions=5, **extra)
    assert reply.model == EMBEDDER
    assert [item.index for item in reply.data] == [0, 1]
    vectors = [item.embedding for item in reply.data]
    if encoding == "base64":  # asked for explicitly, the client hands base64 over undecoded
        assert all(isinstance(v, str) for v in vectors)
        vectors = [decode_base64(v) for v in vectors]
    # The client decodes its default base64 itself: every encoding gives the upstream's exact values.
    assert vectors == [vector_for(t, 5) for t in texts]
    sent = fake.hits("/v1/embeddings")[0]["body"]
    assert sent["dimensions"] == 5 and sent["model"] == EMBEDDING_MODEL


def test_models_list_and_retrieve(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {MODEL, EMBEDDER, f"slow/{CHAT_MODEL}"} <= ids
    assert not any(i.startswith("down/") for i in ids)  # its upstream is down: nothing discovered
    model = client.models.retrieve(EMBEDDER)
    assert model.id == EMBEDDER
    assert model.model_extra["model_type"] == "embedding" and model.model_extra["provider_id"] == "fake"
    with pytest.raises(NotFoundError) as info:
        client.models.retrieve("fake/no-such-model")
    assert info.value.status_code == 404


async def test_async_client_chat_stream_embeddings(aclient: AsyncOpenAI, fake: FakeOpenAI) -> None:
    reply = await aclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "async hi"}])
    assert reply.choices[0].message.content == "echo: async hi"
    assert reply.usage is not None and reply.usage.total_tokens == 6

    stream = await aclient.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "a b c"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    async for chunk in stream:
        pieces += [chunk.choices[0].delta.content or ""] if chunk.choices else []
        usage = chunk.usage or usage
    assert "".join(pieces) == "echo: a b c"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (4, 4)

    embedded = await aclient.embeddings.create(model=EMBEDDER, input="one")
    assert embedded.data[0].embedding == vector_for("one")
    assert len([m async for m in aclient.models.list()]) >= 4
    await aclient.close()
