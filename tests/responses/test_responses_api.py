"""The Responses API through the official openai client: create, stream, retrieve, delete, input items, list,
function tools, parameters and bad input; every object and event parsed by the client's own types, losslessly."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
import requests
from openai import OpenAI
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from responses_helpers import MODEL
from responses_wire import assert_lossless, stream_events
from scripted_upstream import ScriptedUpstream

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def post(base_url: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{base_url}/responses", json=body, timeout=30)


def error_of(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) - {"trace_id"} == {"message", "type", "param", "code", "request_id"}
    return error


def test_create_retrieve_and_delete(client: OpenAI, base_url: str, upstream: ScriptedUpstream) -> None:
    response = client.responses.create(
        model=MODEL, input="hello there", instructions="be brief", metadata={"k": "v"}, temperature=0.5, top_p=0.9
    )
    assert response.status == "completed"
    assert response.output_text == "echo: hello there | system: be brief"
    assert response.metadata == {"k": "v"} and response.temperature == 0.5 and response.top_p == 0.9
    assert response.usage is not None and response.usage.output_tokens > 0
    sent = upstream.chats()[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ]
    assert sent["temperature"] == 0.5 and sent["top_p"] == 0.9 and not sent["stream"]

    raw = requests.get(f"{base_url}/responses/{response.id}", timeout=10).json()
    assert_lossless(Response, raw)
    assert client.responses.retrieve(response.id).output_text == response.output_text

    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_created_response_is_lossless(base_url: str, upstream: ScriptedUpstream) -> None:
    raw = post(base_url, {"model": MODEL, "input": "hi", "tools": [WEATHER], "tool_choice": "none"}).json()
    parsed = assert_lossless(Response, raw)
    assert parsed.output_text == "echo: hi"
    assert "tools" not in upstream.chats()[-1]  # tool_choice none: the model is not offered them


def test_stream_events_in_openai_order(base_url: str) -> None:
    events = stream_events(base_url, {"model": MODEL, "input": "one two three"})
    for event in events:
        assert_lossless(ResponseStreamEvent, event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "echo: one two three"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == deltas
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []


def test_stream_helper_and_stream_true(client: OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="streamed words") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "echo: streamed words"
    assert client.responses.retrieve(final.id).output_text == final.output_text

    kinds = [event.type for event in client.responses.create(model=MODEL, input="x", stream=True)]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_round_trip(client: OpenAI, upstream: ScriptedUpstream, stream: bool) -> None:
    if stream:
        with client.responses.stream(model=MODEL, input="weather in Paris?", tools=[WEATHER]) as events:
            first = events.get_final_response()
    else:
        first = client.responses.create(model=MODEL, input="weather in Paris?", tools=[WEATHER])
    assert first.status == "completed"
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "weather in Paris?"}

    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}],
        tools=[WEATHER],
    )
    # The answer is built from what the model received: the tool's output reached it.
    assert second.output_text == "echo: weather in Paris? | tools: sunny, 21C"
    messages = upstream.chats()[-1]["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == call.call_id
    assert messages[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21C"}
    assert second.previous_response_id == first.id


def test_streamed_function_call_events(base_url: str) -> None:
    events = stream_events(base_url, {"model": MODEL, "input": "weather?", "tools": [WEATHER]})
    for event in events:
        assert_lossless(ResponseStreamEvent, event)
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-4:] == [
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    arguments = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert arguments == done["arguments"] and json.loads(arguments) == {"city": "weather?"}
    assert events[-1]["response"]["output"][0]["arguments"] == arguments


def test_whole_history_as_input_items(client: OpenAI, upstream: ScriptedUpstream) -> None:
    """No previous_response_id: the client sends the call and its output itself."""
    response = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "rain"},
        ],
        tools=[WEATHER],
    )
    assert response.output_text == "echo: weather? | tools: rain"


def test_input_items_pagination(client: OpenAI, base_url: str) -> None:
    response = client.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "d"},
            {"role": "user", "content": [{"type": "input_text", "text": "a"}]},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
    )
    first = client.responses.input_items.list(response.id, order="asc", limit=2)
    assert [item.role for item in first.data] == ["developer", "user"] and first.has_more
    rest = client.responses.input_items.list(response.id, order="asc", after=first.data[-1].id)
    assert [item.role for item in rest.data] == ["assistant", "user"] and not rest.has_more
    newest = client.responses.input_items.list(response.id)  # desc by default
    assert newest.data[0].id == rest.data[-1].id
    raw = requests.get(f"{base_url}/responses/{response.id}/input_items", timeout=10).json()
    for item in raw["data"]:
        assert_lossless(ResponseItem, item)


def test_list_responses(client: OpenAI) -> None:
    made = [client.responses.create(model=MODEL, input=f"list {i}").id for i in range(3)]
    page = client.get("/responses", cast_to=dict, options={"params": {"limit": 2}})
    assert [r["id"] for r in page["data"]] == made[::-1][:2] and page["has_more"]
    later = client.get("/responses", cast_to=dict, options={"params": {"limit": 2, "after": page["last_id"]}})
    assert later["data"][0]["id"] == made[0]


def test_not_stored(client: OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="forget me", store=False)
    assert response.output_text == "echo: forget me"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_text_format_and_tool_choice_reach_the_model(client: OpenAI, upstream: ScriptedUpstream) -> None:
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    response = client.responses.create(
        model=MODEL,
        input="as json",
        text={"format": {"type": "json_schema", "name": "echoed", "schema": schema, "strict": True}},
    )
    assert json.loads(response.output_text) == {"echo": "as json", "format": "json_schema"}
    assert upstream.chats()[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "echoed", "schema": schema, "strict": True},
    }
    assert response.text.format.type == "json_schema"

    client.responses.create(model=MODEL, input="j", text={"format": {"type": "json_object"}})
    assert upstream.chats()[-1]["response_format"] == {"type": "json_object"}

    named = client.responses.create(
        model=MODEL,
        input="w",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    sent = upstream.chats()[-1]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False and named.parallel_tool_calls is False
    client.responses.create(model=MODEL, input="w", tools=[WEATHER], tool_choice="required")
    assert upstream.chats()[-1]["tool_choice"] == "required"


def test_max_output_tokens_ends_incomplete(client: OpenAI, upstream: ScriptedUpstream) -> None:
    response = client.responses.create(model=MODEL, input="a b c d e f g h", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "echo: a b"
    assert upstream.chats()[-1]["max_completion_tokens"] == 3


def test_unknown_previous_response_is_404(base_url: str) -> None:
    error = error_of(post(base_url, {"model": MODEL, "input": "x", "previous_response_id": "resp_nope"}), 404)
    assert error["param"] == "previous_response_id" and "resp_nope" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "function_call", "name": "f"}]}, "input.0.call_id"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        ({"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]}, "input.0.call_id"),
        (
            {"tools": [{"type": "function", "name": "f", "parameters": {"type": "objekt"}}]},
            "tools.0.parameters",
        ),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
        ({"include": ["everything"]}, "include"),
        ({"tool_choice": {"type": "function", "name": "missing"}}, "tool_choice"),
        ({"temperature": 3}, "temperature"),
        # Found by schemathesis (500s): an mcp_call without its name, and input with no chat turn in it.
        ({"input": [{"type": "mcp_call", "id": "mcp_1", "arguments": "{}"}]}, "input.0.name"),
        ({"input": [{"type": "custom_tool_call_output", "call_id": "c"}]}, "input"),
    ],
)
def test_malformed_input_is_400_naming_the_field(base_url: str, body: dict[str, Any], param: str) -> None:
    error = error_of(post(base_url, {"model": MODEL, "input": "x", **body}), 400)
    assert error["param"] == param, error


@pytest.mark.parametrize(
    "tool", [{"type": "web_search"}, {"type": "mcp", "server_label": "s", "server_url": "http://x"}]
)
def test_tools_without_a_runtime_are_400(base_url: str, tool: dict[str, Any]) -> None:
    error = error_of(post(base_url, {"model": MODEL, "input": "x", "tools": [tool]}), 400)
    assert tool["type"] in error["message"] and error["param"] == "tools.0.type"


def test_upstream_failure_names_the_provider(base_url: str, upstream: ScriptedUpstream) -> None:
    upstream.fail_status = 503
    response = post(base_url, {"model": MODEL, "input": "x"})
    assert response.status_code in (502, 503), response.text
    assert "'up'" in response.json()["error"]["message"]


def test_item_reference_reuses_an_earlier_item(client: OpenAI, upstream: ScriptedUpstream) -> None:
    first = client.responses.create(model=MODEL, input="remember this")
    earlier = client.responses.input_items.list(first.id).data[0]
    client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "item_reference", "id": earlier.id}, {"role": "user", "content": "and this"}],
    )
    contents = [m["content"] for m in upstream.chats()[-1]["messages"]]
    assert contents == ["remember this", "echo: remember this", "remember this", "and this"]
    error = error_of(
        post(
            client.base_url.__str__().rstrip("/"),
            {"model": MODEL, "input": [{"type": "item_reference", "id": "msg_x"}]},
        ),
        400,
    )
    assert error["param"] == "input.0.id"


async def test_library_client_responses(upstream: ScriptedUpstream, tmp_path: Any) -> None:
    from lamina.client import LibraryClient
    from responses_helpers import responses_config

    config = {**responses_config(upstream), "storage": {"dir": str(tmp_path)}}
    async with LibraryClient(config) as library:
        answer = await library.responses.create(model=MODEL, input="in process")
        assert isinstance(answer, dict) and answer["output"][0]["content"][0]["text"] == "echo: in process"
        assert (await library.responses.retrieve(answer["id"]))["status"] == "completed"
        events = [event["type"] async for event in await library.responses.create(model=MODEL, input="s", stream=True)]
        assert events[0] == "response.created" and events[-1] == "response.completed"
        await library.responses.delete(answer["id"])


def test_a_stored_prompt_renders_into_the_instructions(
    client: OpenAI, base_url: str, upstream: ScriptedUpstream
) -> None:
    made = requests.post(
        f"{base_url}/prompts",
        json={"prompt": "You are a guide to {{city}}.", "variables": ["city"]},
        timeout=10,
    )
    assert made.status_code == 200, made.text
    prompt_id = made.json()["prompt_id"]
    response = client.responses.create(
        model=MODEL,
        input="what to see?",
        instructions="be brief",
        prompt={"id": prompt_id, "variables": {"city": "Paris"}},
    )
    assert response.status == "completed"
    assert upstream.chats()[-1]["messages"][0] == {"role": "system", "content": "You are a guide to Paris.\n\nbe brief"}
    assert response.prompt is not None and response.prompt.id == prompt_id
    assert_lossless(Response, requests.get(f"{base_url}/responses/{response.id}", timeout=10).json())

    missing = post(base_url, {"model": MODEL, "input": "x", "prompt": {"id": prompt_id}})
    assert error_of(missing, 400)["param"] == "prompt.variables"
    unknown = post(base_url, {"model": MODEL, "input": "x", "prompt": {"id": "pmpt_" + "0" * 48}})
    error_of(unknown, 404)
