"""POST /v1/messages and /v1/messages/count_tokens with the official `anthropic` client, through a real Lamina
server to the fake OpenAI upstream: what reaches the upstream, what comes back, streamed and not, and errors."""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import pytest
import requests
from fake_openai import CHAT_MODEL, TOOL_ARGUMENTS, FakeOpenAI

MODEL = f"fake/{CHAT_MODEL}"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n fake pixel").decode()


@pytest.fixture
def client(server_root: str) -> anthropic.Anthropic:
    # No client-side retries: every upstream call a test counts must come from Lamina.
    return anthropic.Anthropic(base_url=server_root, api_key="unused", max_retries=0, timeout=30)


def upstream_body(upstream: FakeOpenAI) -> dict[str, Any]:
    [sent] = upstream.hits("/v1/chat/completions")
    body: dict[str, Any] = sent["body"]
    return body


def test_message_with_system_and_sampling(client: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=50,
        system="be brief",
        messages=[{"role": "user", "content": "hello there"}],
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
        service_tier="auto",  # Anthropic's own: accepted, nothing to apply
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 40},  # not in this SDK's signature, still in the API
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert [(block.type, block.text) for block in message.content] == [("text", "echo: hello there")]  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (6, 3)  # the fake's counts
    sent = upstream_body(upstream)
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    assert sent["model"] == CHAT_MODEL
    expected = {"max_tokens": 50, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop": ["END"], "user": "u-1"}
    assert {key: sent.get(key) for key in expected} == expected
    assert "stream" not in sent


def test_multi_turn_with_tool_use_and_results(client: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=20,
        system=[{"type": "text", "text": "You answer "}, {"type": "text", "text": "with tools."}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                    {"type": "text", "text": "thanks, and so?"},
                ],
            },
        ],
    )
    assert message.content[0].text == "echo: thanks, and so?"  # type: ignore[union-attr]
    sent = upstream_body(upstream)
    assert sent["messages"] == [
        {"role": "system", "content": "You answer with tools."},
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "user", "content": "thanks, and so?"},
    ]


def test_tool_use_answer(client: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=20,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == ("call_0", "get_weather", json.loads(TOOL_ARGUMENTS))
    sent = upstream_body(upstream)
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": WEATHER["description"],
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("required", False)


def test_structured_output_becomes_a_json_schema_response_format(
    client: anthropic.Anthropic, upstream: FakeOpenAI
) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    client.messages.create(
        model=MODEL,
        max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
        output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"},
    )
    assert upstream_body(upstream)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


def test_named_tool_choice(client: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    client.messages.create(
        model=MODEL,
        max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert upstream_body(upstream)["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_image_blocks_reach_the_provider_as_data_urls(client: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=20,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
                    {"type": "text", "text": "what is this?"},
                ],
            }
        ],
    )
    assert message.content[0].text == "echo: what is this?"  # type: ignore[union-attr]
    assert upstream_body(upstream)["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        {"type": "text", "text": "what is this?"},
    ]


def test_streaming_text(client: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "stream these four words"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) == 5 and "".join(pieces) == "echo: stream these four words"
    assert final.content[0].text == "echo: stream these four words"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 5)
    sent = upstream_body(upstream)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_streaming_tool_use(client: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=50,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER],  # type: ignore[list-item]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    partials = [
        e.delta.partial_json for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]  # type: ignore[union-attr]
    assert "".join(partials) == TOOL_ARGUMENTS and len(partials) == 2  # relayed as the upstream sent it
    assert final.stop_reason == "tool_use"
    [block] = final.content
    assert block.type == "tool_use" and block.input == json.loads(TOOL_ARGUMENTS) and block.name == "get_weather"


def test_stream_wire_format(server_root: str, upstream: FakeOpenAI) -> None:
    """The exact event sequence, `event:` names included (the SDK hides pings), read off the wire."""
    body = {"model": MODEL, "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "a b"}]}
    response = requests.post(f"{server_root}/v1/messages", json=body, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    frames = [frame for frame in response.text.split("\n\n") if frame]
    names = []
    for frame in frames:
        event_line, data_line = frame.split("\n")
        name = event_line.removeprefix("event: ")
        assert json.loads(data_line.removeprefix("data: "))["type"] == name
        names.append(name)
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * 3,  # "echo:", " a", " b"
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    last_delta = json.loads(frames[-2].split("data: ")[1])
    assert last_delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert last_delta["usage"] == {"input_tokens": 3, "output_tokens": 3}


async def test_async_client_streams(server_root: str, upstream: FakeOpenAI) -> None:
    client = anthropic.AsyncAnthropic(base_url=server_root, api_key="unused", max_retries=0, timeout=30)
    async with client.messages.stream(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hello async"}]
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
    assert text == "echo: hello async"
    await client.close()


def test_count_tokens(client: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    counted = client.messages.count_tokens(
        model=MODEL, system="be brief", messages=[{"role": "user", "content": "count these words"}]
    )
    assert counted.input_tokens == 3 + 4  # the fake upstream counts words + 1 per message
    sent = upstream_body(upstream)
    assert sent["max_tokens"] == 1 and "stream" not in sent


def anthropic_error_body(response: requests.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body == {"type": "error", "error": {"type": kind, "message": body["error"]["message"]}}
    message: str = body["error"]["message"]
    assert message
    return message


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages"),
        ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        (
            {"model": MODEL, "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]},
            "temperature",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "tool_choice": {"type": "any"},
                "messages": [{"role": "user", "content": "x"}],
            },
            "tool_choice",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "messages": [{"role": "user", "content": "x"}],
            },
            "thinking",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "max_tokns": 5, "messages": [{"role": "user", "content": "x"}]},
            "max_tokns",
        ),
        # Found by schemathesis (a 500): thinking blocks are dropped, which left no chat message at all.
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "thinking"}]}]},
            "messages",
        ),
    ],
)
def test_bad_requests_are_anthropic_400s(
    server_root: str, upstream: FakeOpenAI, body: dict[str, Any], names: str
) -> None:
    message = anthropic_error_body(
        requests.post(f"{server_root}/v1/messages", json=body, timeout=30), 400, "invalid_request_error"
    )
    assert names in message
    assert upstream.requests == []


def test_count_tokens_of_thinking_alone_is_an_anthropic_400(server_root: str, upstream: FakeOpenAI) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "redacted_thinking"}]}]}
    response = requests.post(f"{server_root}/v1/messages/count_tokens", json=body, timeout=30)
    assert "messages" in anthropic_error_body(response, 400, "invalid_request_error")
    assert upstream.requests == []


def test_openapi_document_declares_anthropic_errors(server_root: str) -> None:
    paths = requests.get(f"{server_root}/v1/openapi.json", timeout=30).json()["paths"]
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        for status in ("4XX", "500", "503"):
            schema = paths[path]["post"]["responses"][status]["content"]["application/json"]["schema"]
            assert schema["required"] == ["type", "error"] and schema["properties"]["type"] == {"const": "error"}
    chat_error = paths["/v1/chat/completions"]["post"]["responses"]["4XX"]["content"]["application/json"]["schema"]
    assert chat_error["required"] == ["error"]


def test_invalid_json_is_an_anthropic_400(server_root: str) -> None:
    response = requests.post(f"{server_root}/v1/messages", data=b"{not json", timeout=30)
    assert "not valid JSON" in anthropic_error_body(response, 400, "invalid_request_error")


def test_sdk_sees_typed_errors(client: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": missing.value.body["error"]["message"]},
    }  # type: ignore[index]
    assert "'nope'" in missing.value.message
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        client.messages.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "x"}])


def test_upstream_failure_names_the_provider(server_root: str, upstream: FakeOpenAI) -> None:
    upstream.fail(500)
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    message = anthropic_error_body(requests.post(f"{server_root}/v1/messages", json=body, timeout=30), 502, "api_error")
    assert "provider 'fake'" in message and "sk-test-secret" not in message
    stream = requests.post(f"{server_root}/v1/messages", json={**body, "stream": True}, timeout=30)
    assert "provider 'fake'" in anthropic_error_body(stream, 502, "api_error")  # failed before the first byte: a status


def test_unreachable_upstream_is_overloaded(server_root: str) -> None:
    body = {"model": "down/any", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    message = anthropic_error_body(
        requests.post(f"{server_root}/v1/messages", json=body, timeout=30), 503, "overloaded_error"
    )
    assert "provider 'down'" in message


def test_routes_are_in_openapi(server_root: str) -> None:
    paths = requests.get(f"{server_root}/v1/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/messages", "/v1/messages/count_tokens"} <= set(paths)


def test_failure_mid_stream_is_an_error_event(server_root: str, upstream: FakeOpenAI) -> None:
    """`slow` gives up on an upstream that pauses longer than its read timeout, after the first chunk arrived."""
    upstream.stream_delay = 1.0
    body = {
        "model": f"slow/{CHAT_MODEL}",
        "max_tokens": 20,
        "stream": True,
        "messages": [{"role": "user", "content": "a b"}],
    }
    response = requests.post(f"{server_root}/v1/messages", json=body, timeout=30)
    assert response.status_code == 200
    frames = [frame.split("\n") for frame in response.text.split("\n\n") if frame]
    assert [event for event, _ in frames[:2]] == ["event: message_start", "event: ping"]
    assert frames[-1][0] == "event: error" and "event: message_stop" not in response.text
    error = json.loads(frames[-1][1].removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "timeout_error"
    assert "provider 'slow'" in error["error"]["message"]


def test_anthropic_sdk_raises_on_an_error_event(client: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    upstream.stream_delay = 1.0
    with (
        pytest.raises(anthropic.APIStatusError, match="provider 'slow'"),
        client.messages.stream(
            model=f"slow/{CHAT_MODEL}", max_tokens=20, messages=[{"role": "user", "content": "a b"}]
        ) as stream,
    ):
        stream.get_final_message()


def test_error_results_images_in_results_and_thinking(client: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}
    client.messages.create(
        model=MODEL,
        max_tokens=20,
        messages=[
            {"role": "user", "content": "draw"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_9", "name": "draw", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_9",
                        "is_error": True,
                        "content": [{"type": "text", "text": "out of ink"}, image],
                    }
                ],
            },
        ],
    )
    assert upstream_body(upstream)["messages"][1:] == [
        {
            "role": "assistant",  # the thinking block is dropped; `content: None` is left out on the way upstream
            "tool_calls": [{"id": "toolu_9", "type": "function", "function": {"name": "draw", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "toolu_9", "content": "Error: out of ink"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]},
    ]


def test_client_leaving_a_stream_stops_the_upstream(server_root: str, upstream: FakeOpenAI) -> None:
    upstream.stream_delay = 0.2
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": " ".join("w" * 30)}],
    }
    with requests.post(f"{server_root}/v1/messages", json=body, stream=True, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines) == b"event: message_start"
    assert upstream.disconnected.wait(10)  # the closed response closed the chunks, which closed the upstream
    assert upstream.streams_finished == 0
