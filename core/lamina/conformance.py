"""The conformance suite of inference providers: what every provider, ours or a third party's, must do when a
client talks to it through Lamina with the official `openai` client: chat, streaming, tool calls, embeddings where
it has them, and errors in OpenAI's shape.

Subclass `InferenceConformance` in a test module and give the module a `target` fixture: a running Lamina stack
serving the provider, the model to test and what the provider can do. pytest collects the subclass's inherited
tests:

    import pytest
    from lamina.conformance import InferenceConformance, Target
    from lamina.testing import serve

    @pytest.fixture(scope="module")
    def target():
        config = {"providers": {"inference": [{"id": "mycloud", "type": "remote::mycloud", "config": {...}}]}}
        with serve(config) as base_url:
            yield Target(base_url=base_url, model="mycloud/m-1", tools=True)

    class TestMyCloud(InferenceConformance):
        pass

Tests of a capability the target does not declare are skipped, saying so. Every request asks for greedy decoding
and a fixed seed and is the same on every run, so the suite replays against recorded upstream exchanges
(`lamina.recording`). The assertions hold for any model that answers at all, a 135M-parameter one included: they
check the shape of the answers, not their wisdom.

This module imports pytest and openai (`pip install 'lamina-stack[testing]'`): it is for test suites, and core's
runtime never imports it.
"""

from __future__ import annotations

import base64
import json
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

try:  # test dependencies, not core's: lamina-stack[testing]
    import openai  # type: ignore[import-not-found,unused-ignore]
    import pytest  # type: ignore[import-not-found,unused-ignore]
except ImportError as missing:
    raise ImportError(
        f"lamina.conformance needs pytest and openai: pip install 'lamina-stack[testing]' ({missing})"
    ) from None

MAX_TOKENS = 24
SEED = 7
TIMEOUT_SECONDS = 300  # a small CPU model on a loaded machine answers slowly
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city's name"}},
            "required": ["city"],
        },
    },
}
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}


@dataclass(frozen=True)
class Target:
    """What the suite tests: a Lamina stack and one provider's models in it.

    `base_url` is the stack's, ending in /v1 (what `lamina.testing.serve` yields); `model` a chat model as clients
    name it (`<provider_id>/<model>` or an alias). `tools`: the provider makes tool calls when `tool_choice` asks
    for one. `embedding_model`: an embedding model of the provider, if it has one. `seed`: sent with every chat
    request; None for a provider that refuses `seed` (Anthropic's API has none). `api_key`: the stack's key when its
    auth is on.
    """

    base_url: str
    model: str
    tools: bool = False
    embedding_model: str | None = None
    seed: int | None = SEED
    api_key: str = "unused"

    def greedy(self, **request: Any) -> dict[str, Any]:
        """A chat request to the target's model that decodes the same way every run."""
        seeded = {} if self.seed is None else {"seed": self.seed}
        return {"model": self.model, "temperature": 0, **seeded, "max_tokens": MAX_TOKENS, **request}


def error_of(exc: Any) -> dict[str, Any]:
    """The `error` object of an `openai.APIStatusError`, checked to be OpenAI's shape."""
    body = exc.body
    assert isinstance(body, dict), f"the error body is not an OpenAI error object: {body!r}"
    error = body.get("error", body)  # the openai client hands over the `error` member alone
    assert isinstance(error, dict) and set(error) >= OPENAI_ERROR_FIELDS, f"not OpenAI's error shape: {body!r}"
    assert isinstance(error["message"], str) and error["message"], f"an error without a message: {body!r}"
    return error


def assert_usage(usage: Any) -> None:
    assert usage is not None, "the answer reports no usage"
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def tool_arguments(call: Any) -> dict[str, Any]:
    assert call.type == "function" and call.id, f"a tool call without an id or of another type: {call!r}"
    assert call.function.name == "get_weather", f"called {call.function.name!r}, the only tool is get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments, dict), f"tool arguments are not a JSON object: {call.function.arguments!r}"
    assert isinstance(arguments.get("city"), str), f"the required argument `city` is missing: {arguments!r}"
    return arguments


class InferenceConformance:
    """The suite. Subclass it in a module that has a `target` fixture (see the module's docstring)."""

    @pytest.fixture(scope="class")  # type: ignore[untyped-decorator,unused-ignore]
    @classmethod
    def client(cls, target: Target) -> Iterator[Any]:
        with openai.OpenAI(
            base_url=target.base_url, api_key=target.api_key, max_retries=0, timeout=TIMEOUT_SECONDS
        ) as client:
            yield client

    # -- models

    def test_lists_the_model(self, client: Any, target: Target) -> None:
        models = {model.id: model for model in client.models.list().data}
        assert target.model in models, f"{target.model} is not in /v1/models: {sorted(models)}"
        assert client.models.retrieve(target.model).id == target.model

    # -- chat

    def test_chat(self, client: Any, target: Target) -> None:
        reply = client.chat.completions.create(**target.greedy(messages=QUESTION))
        assert reply.object == "chat.completion" and reply.id and reply.created > 0
        [choice] = reply.choices
        assert choice.index == 0 and choice.message.role == "assistant"
        assert isinstance(choice.message.content, str) and choice.message.content.strip()
        assert not choice.message.tool_calls
        assert choice.finish_reason in ("stop", "length")
        assert_usage(reply.usage)
        assert reply.usage.completion_tokens <= MAX_TOKENS

    def test_chat_with_a_system_prompt_and_earlier_turns(self, client: Any, target: Target) -> None:
        messages = [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Name another one."},
        ]
        reply = client.chat.completions.create(**target.greedy(messages=messages))
        assert (reply.choices[0].message.content or "").strip()
        assert reply.choices[0].finish_reason in ("stop", "length")

    def test_max_tokens_cuts_the_answer(self, client: Any, target: Target) -> None:
        messages = [{"role": "user", "content": "Count from one to one hundred in words."}]
        reply = client.chat.completions.create(**target.greedy(messages=messages, max_tokens=3))
        assert reply.choices[0].finish_reason == "length"
        assert 0 < reply.usage.completion_tokens <= 3

    # -- streaming

    def test_stream(self, client: Any, target: Target) -> None:
        stream = client.chat.completions.create(
            **target.greedy(messages=QUESTION, stream=True, stream_options={"include_usage": True})
        )
        chunks = list(stream)
        with_choices = [chunk for chunk in chunks if chunk.choices]
        assert with_choices, "the stream has no chunk with a choice"
        assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
        assert len({chunk.id for chunk in chunks}) == 1, "a stream's chunks share one id"
        text = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
        assert text.strip(), "the stream carries no text"
        finishes = [chunk.choices[0].finish_reason for chunk in with_choices if chunk.choices[0].finish_reason]
        assert finishes in (["stop"], ["length"]), f"one finish_reason, at the end: {finishes}"
        assert with_choices[-1].choices[0].finish_reason == finishes[0]
        assert not chunks[-1].choices, "with include_usage, the last chunk carries usage and no choice"
        assert_usage(chunks[-1].usage)

    def test_stream_without_usage(self, client: Any, target: Target) -> None:
        chunks = list(client.chat.completions.create(**target.greedy(messages=QUESTION, stream=True)))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        assert all(chunk.usage is None for chunk in chunks), "usage was not asked for"

    # -- tools

    def test_tool_call(self, client: Any, target: Target) -> None:
        if not target.tools:
            pytest.skip("the target declares no tool calls (Target.tools)")
        reply = client.chat.completions.create(
            **target.greedy(
                messages=WEATHER_QUESTION,
                tools=[WEATHER_TOOL],
                tool_choice="required",
                max_tokens=64,
            )
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls, "tool_choice=required answered without a tool call"
        arguments = tool_arguments(choice.message.tool_calls[0])
        # The tool's result goes back; the model answers in text.
        answered = client.chat.completions.create(
            **target.greedy(
                messages=[
                    *WEATHER_QUESTION,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [choice.message.tool_calls[0].model_dump(exclude_none=True)],
                    },
                    {
                        "role": "tool",
                        "tool_call_id": choice.message.tool_calls[0].id,
                        "content": json.dumps({"city": arguments["city"], "weather": "sunny, 21 C"}),
                    },
                ],
                tools=[WEATHER_TOOL],
                tool_choice="none",
            )
        )
        assert (answered.choices[0].message.content or "").strip()
        assert not answered.choices[0].message.tool_calls

    def test_tool_call_streamed(self, client: Any, target: Target) -> None:
        if not target.tools:
            pytest.skip("the target declares no tool calls (Target.tools)")
        stream = client.chat.completions.create(
            **target.greedy(
                messages=WEATHER_QUESTION,
                tools=[WEATHER_TOOL],
                tool_choice="required",
                max_tokens=64,
                stream=True,
            )
        )
        calls: dict[int, dict[str, Any]] = {}
        finishes = []
        for chunk in stream:
            if not chunk.choices:
                continue
            for delta in chunk.choices[0].delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "type": "function", "name": "", "arguments": ""})
                call["id"] = call["id"] or delta.id or ""
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
            if chunk.choices[0].finish_reason:
                finishes.append(chunk.choices[0].finish_reason)
        assert finishes == ["tool_calls"]
        assert 0 in calls, "the stream carried no tool call"
        first = calls[0]
        assert first["id"] and first["name"] == "get_weather"
        arguments = json.loads(first["arguments"])
        assert isinstance(arguments, dict) and isinstance(arguments.get("city"), str)

    # -- embeddings

    def test_embeddings(self, client: Any, target: Target) -> None:
        if target.embedding_model is None:
            pytest.skip("the target declares no embedding model (Target.embedding_model)")
        answer = client.embeddings.create(model=target.embedding_model, input=["a cat", "a dog"])
        assert answer.object == "list" and [item.index for item in answer.data] == [0, 1]
        first, second = (item.embedding for item in answer.data)
        assert len(first) == len(second) > 0 and all(isinstance(x, float) for x in first)
        assert first != second, "two different texts got the same vector"
        assert answer.usage.prompt_tokens > 0
        encoded = client.embeddings.create(model=target.embedding_model, input="a cat", encoding_format="base64")
        packed = encoded.data[0].embedding  # asked for explicitly, base64 is handed over as the string
        unpacked = array("f", base64.b64decode(packed)).tolist() if isinstance(packed, str) else packed
        assert unpacked == pytest.approx(first, rel=1e-4, abs=1e-5), "float and base64 answers differ"

    # -- errors

    def test_an_unknown_model_is_a_404(self, client: Any, target: Target) -> None:
        prefix = target.model.split("/", 1)[0] + "/" if "/" in target.model else ""
        missing = f"{prefix}no-such-model-conformance"
        for stream in (False, True):
            with pytest.raises(openai.NotFoundError) as raised:
                client.chat.completions.create(**target.greedy(model=missing, messages=QUESTION, stream=stream))
            error = error_of(raised.value)
            assert missing in error["message"], f"the 404 does not name the model: {error}"

    def test_a_malformed_request_is_a_400(self, client: Any, target: Target) -> None:
        bad_requests: list[dict[str, Any]] = [
            {"model": target.model},  # no messages
            {"model": target.model, "messages": QUESTION, "temperature": "hot"},
            {"model": target.model, "messages": [{"role": "wizard", "content": "hi"}]},
            {"model": target.model, "messages": QUESTION, "max_tokens": -1},
        ]
        for body in bad_requests:
            with pytest.raises(openai.BadRequestError) as raised:
                client.post("/chat/completions", body=body, cast_to=object)
            error = error_of(raised.value)
            assert error["type"] == "invalid_request_error", error
