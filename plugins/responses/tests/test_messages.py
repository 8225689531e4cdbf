"""How Responses items become the chat messages the model reads."""

from __future__ import annotations

from lamina_responses.orchestrator import to_messages


def test_items_become_chat_messages() -> None:
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "let me look"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
        {"type": "file_search_call", "id": "fs1", "queries": ["q"], "status": "completed", "results": None},
        {"type": "reasoning", "id": "r1", "summary": []},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": "data:x"}],
        },
    ]
    messages = to_messages("be kind", items)
    assert messages[0] == {"role": "system", "content": "be kind"}
    assert messages[1] == {"role": "user", "content": "hi"}
    assert messages[2]["content"] == "let me look"  # the calls join the assistant message before them
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["c1", "c2"]
    assert messages[3:5] == [
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]
    assert messages[5]["tool_calls"][0]["function"]["name"] == "file_search"
    assert messages[6]["role"] == "tool" and "not kept" in messages[6]["content"]
    assert messages[7]["content"][1] == {"type": "image_url", "image_url": {"url": "data:x", "detail": "auto"}}
    assert len(messages) == 8  # the reasoning item is not sent
