"""The Conversations API through the official openai client, and responses that keep their turns in one."""

from __future__ import annotations

import openai
import pytest
import requests
from openai import OpenAI
from openai.types.conversations import Conversation, ConversationItem
from responses_helpers import MODEL
from responses_wire import assert_lossless
from scripted_upstream import ScriptedUpstream


def test_conversation_crud(client: OpenAI, base_url: str) -> None:
    conversation = client.conversations.create(
        metadata={"topic": "demo"}, items=[{"type": "message", "role": "user", "content": "first"}]
    )
    assert conversation.metadata == {"topic": "demo"}
    assert_lossless(Conversation, requests.get(f"{base_url}/conversations/{conversation.id}", timeout=10).json())
    updated = client.conversations.update(conversation.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"}
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "changed"}

    added = client.conversations.items.create(
        conversation.id,
        items=[{"type": "message", "role": "assistant", "content": "second"}, {"role": "user", "content": "third"}],
    )
    assert len(added.data) == 2
    items = client.conversations.items.list(conversation.id, order="asc")
    texts = [item.content[0].text for item in items.data]  # type: ignore[union-attr]
    assert texts == ["first", "second", "third"]
    raw = requests.get(f"{base_url}/conversations/{conversation.id}/items", timeout=10).json()
    for item in raw["data"]:
        assert_lossless(ConversationItem, item)

    page = client.conversations.items.list(conversation.id, order="asc", limit=1, after=items.data[0].id)
    assert [i.id for i in page.data] == [items.data[1].id] and page.has_more
    one = client.conversations.items.retrieve(items.data[1].id, conversation_id=conversation.id)
    assert one.id == items.data[1].id
    client.conversations.items.delete(items.data[1].id, conversation_id=conversation.id)
    assert [i.id for i in client.conversations.items.list(conversation.id, order="asc").data] == [
        items.data[0].id,
        items.data[2].id,
    ]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(items.data[1].id, conversation_id=conversation.id)

    deleted = client.conversations.delete(conversation.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(conversation.id)


def test_responses_append_to_their_conversation(client: OpenAI, upstream: ScriptedUpstream) -> None:
    conversation = client.conversations.create()
    first = client.responses.create(model=MODEL, input="my name is Ada", conversation=conversation.id)
    assert first.conversation is not None and first.conversation.id == conversation.id
    second = client.responses.create(model=MODEL, input="what is my name?", conversation={"id": conversation.id})
    assert second.output_text == "echo: what is my name?"
    # The second turn saw the first: its input, then the answer.
    assert upstream.chats()[-1]["messages"] == [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "echo: my name is Ada"},
        {"role": "user", "content": "what is my name?"},
    ]
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [(item.type, getattr(item, "role", None)) for item in items] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert items[1].id == first.output[0].id and items[3].id == second.output[0].id


def test_streamed_response_appends_too(client: OpenAI) -> None:
    conversation = client.conversations.create()
    with client.responses.stream(model=MODEL, input="streamed turn", conversation=conversation.id) as stream:
        final = stream.get_final_response()
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [item.id for item in items][1:] == [final.output[0].id]


def test_unknown_conversation_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=MODEL, input="x", conversation="conv_missing")
    assert caught.value.body["param"] == "conversation"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="x", conversation="conv_a", previous_response_id="resp_b")
