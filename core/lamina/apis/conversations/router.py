"""The conversations router: conversations and their items in the stack's storage.

A conversation is one record (`conversations/<id>`); its items are kept in batches (`conversation_items/<id>/
<key>`), each batch written in one storage write, so the items a response appends (its input and its output)
appear together or not at all. Every read, update and delete goes through `fetch`, the one place an access check
belongs.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from lamina.apis.conversations.types import (
    Conversation,
    CreateConversation,
    CreateItems,
    Item,
    ItemBatch,
    ItemsQuery,
    UpdateConversation,
    new_id,
    normalize_item,
    page,
)
from lamina.errors import bad_request, not_found
from lamina.storage import KVStore, Registry

ITEMS_PREFIX = "conversation_items/"


def batch_key() -> str:
    return f"{time.time_ns():020d}-{new_id('b')[2:10]}"


class ConversationsRouter:
    def __init__(self, kv: KVStore) -> None:
        self.conversations = Registry(kv, "conversations/", Conversation, key=lambda c: c.id)
        self.batches = Registry(kv, ITEMS_PREFIX, ItemBatch, key=lambda b: f"{b.conversation_id}/{b.key}")

    def allowed(self, conversation: Conversation) -> bool:
        """Whether this request may see `conversation`: the one access check (auth decides it from `owner`)."""
        return True

    async def fetch(self, conversation_id: str, *, param: str = "conversation_id") -> Conversation:
        """The conversation `conversation_id`, or a 404: every access to a conversation (and its items) starts
        here."""
        conversation = await self.conversations.get(conversation_id) if conversation_id else None
        if conversation is None or not self.allowed(conversation):
            raise not_found(f"conversation '{conversation_id}' not found", param=param)
        return conversation

    async def create(self, request: CreateConversation, owner: str | None = None) -> dict[str, Any]:
        conversation = Conversation(id=new_id("conv"), metadata=request.metadata or {}, owner=owner)
        items = [_stored(item) for item in request.items or []]
        if items:  # items first: a conversation never shows without the items it was created with
            await self.batches.put(ItemBatch(conversation_id=conversation.id, key=batch_key(), items=items))
        await self.conversations.put(conversation)
        return conversation.wire()

    async def retrieve(self, conversation_id: str) -> dict[str, Any]:
        return (await self.fetch(conversation_id)).wire()

    async def update(self, conversation_id: str, request: UpdateConversation) -> dict[str, Any]:
        conversation = await self.fetch(conversation_id)
        updated = await self.conversations.put(conversation.model_copy(update={"metadata": request.metadata}))
        return updated.wire()

    async def delete(self, conversation_id: str) -> dict[str, Any]:
        conversation = await self.fetch(conversation_id)
        await self.conversations.delete(conversation.id)  # the record first: its items are unreachable from here
        for batch in await self.batches.list(f"{conversation.id}/"):
            await self.batches.delete(f"{conversation.id}/{batch.key}")
        return {"id": conversation.id, "object": "conversation.deleted", "deleted": True}

    async def items(self, conversation_id: str, *, param: str = "conversation_id") -> list[Item]:
        """Every item of a conversation, oldest first."""
        conversation = await self.fetch(conversation_id, param=param)
        return [item for batch in await self.batches.list(f"{conversation.id}/") for item in batch.items]

    async def append(self, conversation_id: str, items: list[Item]) -> None:
        """Append already-normalised items in one write."""
        conversation = await self.fetch(conversation_id, param="conversation")
        if items:
            await self.batches.put(
                ItemBatch(conversation_id=conversation.id, key=batch_key(), items=items, owner=conversation.owner)
            )

    async def create_items(self, conversation_id: str, request: CreateItems) -> dict[str, Any]:
        items = [_stored(item) for item in request.items]
        await self.append(conversation_id, items)
        return {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"],
            "last_id": items[-1]["id"],
            "has_more": False,
        }

    async def list_items(self, conversation_id: str, query: ItemsQuery) -> dict[str, Any]:
        return page(await self.items(conversation_id), query)

    async def retrieve_item(self, conversation_id: str, item_id: str) -> Item:
        for item in await self.items(conversation_id):
            if item.get("id") == item_id:
                return item
        raise not_found(f"item '{item_id}' not found in conversation '{conversation_id}'", param="item_id")

    async def delete_item(self, conversation_id: str, item_id: str) -> dict[str, Any]:
        conversation = await self.fetch(conversation_id)
        for batch in await self.batches.list(f"{conversation.id}/"):
            kept = [item for item in batch.items if item.get("id") != item_id]
            if len(kept) == len(batch.items):
                continue
            if kept:
                await self.batches.put(batch.model_copy(update={"items": kept}))
            else:
                await self.batches.delete(f"{conversation.id}/{batch.key}")
            return conversation.wire()
        raise not_found(f"item '{item_id}' not found in conversation '{conversation_id}'", param="item_id")


def _stored(item: BaseModel) -> Item:
    if getattr(item, "type", None) == "item_reference":
        raise bad_request("item references cannot be added to a conversation", param="items")
    return normalize_item(item)
