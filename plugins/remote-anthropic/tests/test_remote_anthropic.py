"""remote::anthropic with the official `openai` client talking to Lamina, in front of a fake Anthropic API."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anthropic
import openai
import pytest
import requests
from fake_anthropic import API_KEY, MODELS, TOOL_INPUT, FakeAnthropic, input_tokens
from lamina.plugins import make_plugin_manager, provider_specs
from lamina.testing import serve
from lamina_remote_anthropic import AnthropicConfig

MODEL = "claude/claude-fake-1"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PIXEL = "iVBORw0KGgo="
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
WEATHER_TOOL = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)


def sent(upstream: FakeAnthropic) -> dict[str, Any]:
    [request] = upstream.hits("/v1/messages")
    body: dict[str, Any] = request["body"]
    return body


def test_registered_and_light() -> None:
    spec = provider_specs(make_plugin_manager())["remote::anthropic"]
    assert (spec.api, spec.config, spec.package) == ("inference", AnthropicConfig, "lamina-remote-anthropic")
    code = "import sys, lamina_remote_anthropic; print('aiohttp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    assert AnthropicConfig(base_url="http://h:1/v1/").base_url == "http://h:1"
    assert "sk-1" not in repr(AnthropicConfig(api_key="sk-1"))


def test_models_are_listed_across_pages(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list().data}
    assert {f"claude/{m}" for m in MODELS} <= ids


def test_chat(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        temperature=0.2,
        top_p=0.9,
        user="u-7",
        extra_body={"top_k": 5},
    )
    assert reply.model == MODEL
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    body = sent(upstream)
    counted = len(body["system"].split()) + len(
        json.dumps(body["messages"][0]["content"]).split()
    )  # as the fake counts
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (counted + 2, 3)  # + its 2 cache-read tokens
    assert body == {
        "model": "claude-fake-1",
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
        "max_tokens": 4096,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 5,
        "metadata": {"user_id": "u-7"},
    }
    headers = upstream.hits("/v1/messages")[0]["headers"]
    assert (headers["x-api-key"], headers["anthropic-version"]) == (API_KEY, "2023-06-01")


def test_stop_sequences_and_max_tokens(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    stopped = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "one two three"}], stop=["three"]
    )
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == ("echo: one two ", "stop")
    assert sent(upstream)["stop_sequences"] == ["three"]
    upstream.reset()
    cut = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a b c d"}], max_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("echo: a", "length")
    assert sent(upstream)["max_tokens"] == 2


def test_streaming(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "stream these words"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: stream these words"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert all(c.model == MODEL for c in chunks)
    assert sent(upstream)["stream"] is True


def test_tool_calls_and_results_round_trip(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    question = {"role": "user", "content": "weather in Paris?"}
    reply = client.chat.completions.create(
        model=MODEL, messages=[question], tools=[WEATHER], tool_choice="required", parallel_tool_calls=False
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "toolu_fake_0",
        "get_weather",
        TOOL_INPUT,
    )
    body = sent(upstream)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    upstream.reset()
    answer = client.chat.completions.create(
        model=MODEL,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
            {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
            {"role": "user", "content": "so?"},
        ],
    )
    assert answer.choices[0].message.content == "echo: so?"
    assert sent(upstream)["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_fake_0", "name": "get_weather", "input": TOOL_INPUT}],
        },
        {
            "role": "user",  # the tool result and the next user turn merge: Anthropic's roles alternate
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_fake_0", "content": "18C and sunny"},
                {"type": "text", "text": "so?"},
            ],
        },
    ]


def test_streamed_tool_call(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
        )
    )
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert calls[0].id == "toolu_fake_0" and calls[0].function.name == "get_weather"
    assert json.loads("".join(call.function.arguments or "" for call in calls)) == TOOL_INPUT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert sent(upstream)["tool_choice"] == {"type": "tool", "name": "get_weather"}


def test_images_and_json_schema(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is it?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema}},
    )
    body = sent(upstream)
    assert body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_unsupported_fields_are_400s(
    client: openai.OpenAI, upstream: FakeAnthropic, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], **fields)
    assert error.value.body["param"] == param  # type: ignore[index]
    assert upstream.requests == []


def test_upstreams_verdict_on_a_request_is_passed_on(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    with pytest.raises(openai.BadRequestError, match="provider 'claude': temperature"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=1.5)


def test_completions_and_embeddings_are_400s(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="chat/completions"):
        client.completions.create(model=MODEL, prompt="x")
    with pytest.raises(openai.BadRequestError, match="no embeddings"):
        client.embeddings.create(model=MODEL, input="x")


def test_upstream_failures_name_the_provider_and_hide_the_key(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    chat = {"messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(openai.APIStatusError) as rejected:
        client.chat.completions.create(model="badkey/m", **chat)
    assert rejected.value.status_code == 502
    assert "provider 'badkey'" in rejected.value.message and "api_key" in rejected.value.message
    assert "sk-ant-wrong" not in rejected.value.message
    upstream.reset()
    upstream.fail(529, error_type="overloaded_error")
    with pytest.raises(openai.APIStatusError) as overloaded:
        client.chat.completions.create(model=MODEL, **chat)
    assert overloaded.value.status_code == 503 and "provider 'claude'" in overloaded.value.message
    assert len(upstream.hits("/v1/messages")) == 2  # retried once
    upstream.reset()
    upstream.fail(500, times=1)
    assert client.chat.completions.create(model=MODEL, **chat).choices[0].message.content == "echo: x"
    with pytest.raises(openai.APIStatusError) as down:
        client.chat.completions.create(model="down/m", **chat)
    assert down.value.status_code == 503 and "provider 'down'" in down.value.message


def test_error_mid_stream_ends_the_stream_with_an_error(base_url: str, upstream: FakeAnthropic) -> None:
    upstream.fail_midstream()
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    response = requests.post(f"{base_url}/chat/completions", json=body, timeout=30)
    assert response.status_code == 200
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    assert events[1]["choices"][0]["delta"] == {"content": "echo:"}
    assert "provider 'claude'" in events[-1]["error"]["message"]
    assert "[DONE]" not in response.text


def test_anthropic_client_through_lamina_to_anthropic(base_url: str, upstream: FakeAnthropic) -> None:
    """Both directions at once: the anthropic SDK → /v1/messages → chat → remote::anthropic → Messages."""
    client = anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key="unused", max_retries=0)
    message = client.messages.create(
        model=MODEL,
        max_tokens=30,
        system="sys",
        messages=[{"role": "user", "content": "one two three"}],
        stop_sequences=["two"],
    )
    assert message.content[0].text == "echo: one "  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"  # chat's "stop" cannot say which sequence matched
    assert sent(upstream) == {
        "model": "claude-fake-1",
        "system": "sys",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "one two three"}]}],
        "max_tokens": 30,
        "stop_sequences": ["two"],
    }
    with client.messages.stream(
        model=MODEL,
        max_tokens=30,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].input == TOOL_INPUT  # type: ignore[union-attr]


def test_client_leaving_a_stream_stops_the_upstream(base_url: str, upstream: FakeAnthropic) -> None:
    upstream.stream_delay = 0.2
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": " ".join("w" * 30)}]}
    with requests.post(f"{base_url}/chat/completions", json=body, stream=True, timeout=30) as response:
        assert next(response.iter_lines()).startswith(b"data: {")
    assert upstream.disconnected.wait(10)


def test_count_tokens_asks_anthropics_counting_endpoint(base_url: str, upstream: FakeAnthropic) -> None:
    client = anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "count these four words"}]
    counted = client.messages.count_tokens(model=MODEL, system="be brief", messages=messages, tools=[WEATHER_TOOL])
    [request] = upstream.hits("/v1/messages/count_tokens")
    assert upstream.hits("/v1/messages") == []  # no generation
    assert counted.input_tokens == input_tokens(request["body"])
    assert set(request["body"]) == {"model", "system", "messages", "tools"}


def test_each_upstream_request_goes_through_the_observers_outbound_seam(
    upstream: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An observer (lamina-telemetry's, here one of the test's own) sees every request to Anthropic, may add the
    trace's headers to what is sent, and is told the answer's status."""
    from contextlib import contextmanager

    from lamina import hookimpl, observe

    seen: list[tuple[str, str, int]] = []

    class Recorder(observe.Observer):
        def outbound(self, method: str, url: str, headers: dict[str, str]) -> Any:
            headers["traceparent"] = TRACEPARENT

            @contextmanager
            def recorded() -> Any:
                statuses: list[int] = []
                yield statuses.append
                seen.append((method, url, *statuses))

            return recorded()

    class ObservingPlugin:
        @hookimpl
        def observer(self, config: Any) -> observe.Observer:
            return Recorder()

    monkeypatch.setenv("LAMINA_DISABLE_PLUGINS", "lamina-telemetry")  # its observer would win
    pm = make_plugin_manager()
    pm.register(ObservingPlugin(), name="test-observer")
    config = {"base_url": upstream.base_url, "api_key": API_KEY, "models": ["claude-fake-1"]}
    with serve(
        {"providers": {"inference": [{"id": "claude", "type": "remote::anthropic", "config": config}]}}, pm=pm
    ) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert seen == [("POST", upstream.base_url + "/v1/messages", 200)]
    [request] = upstream.hits("/v1/messages")
    assert {k.lower(): v for k, v in request["headers"].items()}["traceparent"] == TRACEPARENT
