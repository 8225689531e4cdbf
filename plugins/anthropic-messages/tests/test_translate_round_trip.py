"""The one translation read both ways: a request or an answer taken across and back comes back unchanged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from lamina_anthropic_messages import translate

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
MESSAGES_REQUEST: dict[str, Any] = {
    "model": "m",
    "system": "be brief",
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "looking"},
                {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "18C"},
                {"type": "text", "text": "and?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ],
        },
    ],
    "max_tokens": 99,
    "stop_sequences": ["END"],
    "temperature": 0.3,
    "top_p": 0.8,
    "top_k": 7,
    "tools": [{"name": "weather", "description": "the weather", "input_schema": SCHEMA}],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
    "metadata": {"user_id": "u"},
}


def test_a_messages_request_survives_chat_and_back() -> None:
    chat = translate.chat_request(MESSAGES_REQUEST)
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert translate.anthropic_request(chat, default_max_tokens=1) == MESSAGES_REQUEST


def test_every_tool_choice_survives_both_ways() -> None:
    for choice in ({"type": "auto"}, {"type": "none"}, {"type": "tool", "name": "weather"}):
        request = {**MESSAGES_REQUEST, "tool_choice": choice}
        assert translate.anthropic_request(translate.chat_request(request), 1)["tool_choice"] == choice


def test_an_answer_survives_both_ways() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    back = translate.anthropic_message(translate.chat_completion(message), [])
    assert {**back, "id": "msg_1"} == message
    for reason in ("end_turn", "max_tokens", "refusal"):
        assert (
            translate.anthropic_message(translate.chat_completion({**message, "stop_reason": reason}), [])[
                "stop_reason"
            ]
            == reason
        )


async def test_a_stream_survives_both_ways() -> None:
    message = {"id": "msg_1", "model": "m", "content": [], "usage": {"input_tokens": 4, "output_tokens": 0}}
    events = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " 1}"}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 6},
        },
        {"type": "message_stop"},
    ]

    async def each(items: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        for item in items:
            yield item

    chunks = [chunk async for chunk in translate.chat_chunks(each(events), include_usage=True)]
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    again = [event async for event in translate.anthropic_events(each(chunks), "m", [])]
    assert [e["type"] for e in again] == ["message_start", "ping", *[e["type"] for e in events[1:]]]
    # message_delta carries input_tokens as well: message_start cannot, as chat reports usage only at the end.
    expected = [*events[1:-2], {**events[-2], "usage": {"input_tokens": 4, "output_tokens": 6}}, events[-1]]
    assert [e for e in again if e["type"] not in ("message_start", "ping")] == expected
    arguments = "".join(e["delta"].get("partial_json", "") for e in again if e["type"] == "content_block_delta")
    assert json.loads(arguments) == {"a": 1}
