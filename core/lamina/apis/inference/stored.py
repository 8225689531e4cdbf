"""Stored chat completions: `store: true` keeps a chat completion (and the messages that asked for it) in the stack's
storage, where OpenAI's `GET/POST/DELETE /v1/chat/completions/{id}` and `.../messages` find it again.

A stream is stored once it has ended, assembled into the `chat.completion` the client would have got without
streaming; a stream the client left, or that failed, is not stored (it holds no finished answer). Every read of a
stored completion goes through `StoredCompletions.fetch` and every listing through `visible`: that is where who may
see a completion (its `owner`, the caller that stored it) is checked (`lamina.auth`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lamina import auth
from lamina.access import Owner
from lamina.errors import not_found
from lamina.storage import KVStore, Registry

MAX_METADATA_PAIRS = 16  # OpenAI's limits on `metadata`
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str] | None:
    """OpenAI's rules for `metadata`: at most 16 string pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return None
    if len(metadata) > MAX_METADATA_PAIRS:
        raise ValueError(f"at most {MAX_METADATA_PAIRS} key-value pairs")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise ValueError(f"key '{key[:20]}...' is longer than {MAX_METADATA_KEY} characters")
        if len(value) > MAX_METADATA_VALUE:
            raise ValueError(f"the value of '{key}' is longer than {MAX_METADATA_VALUE} characters")
    return metadata


class StoredCompletion(BaseModel):
    """What the storage keeps per stored chat completion."""

    id: str
    completion: dict[str, Any]  # the `chat.completion` object as the client got it (assembled, for a stream)
    input_messages: list[dict[str, Any]]
    model: str  # the model id the client sent
    metadata: dict[str, str] = {}
    order: str  # creation time in nanoseconds, zero-padded: its place in listings
    owner: Owner | None = None  # who stored it (lamina.auth); None: stored while auth was off


class UpdateCompletion(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    metadata: dict[str, str] | None

    _check = field_validator("metadata")(check_metadata)


class ListCompletionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: str | None = None
    limit: int = Field(20, ge=1, le=100)
    model: str | None = None
    order: Literal["asc", "desc"] = "asc"


class ListMessagesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: str | None = None
    limit: int = Field(20, ge=1, le=100)
    order: Literal["asc", "desc"] = "asc"


class CompletionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class CompletionDeleted(BaseModel):
    id: str
    object: Literal["chat.completion.deleted"] = "chat.completion.deleted"
    deleted: bool = True


def _page(items: list[dict[str, Any]], after: str | None, limit: int, *, param: str = "after") -> CompletionList:
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise not_found(f"'{after}' is not in this listing", param=param)
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return CompletionList(
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=len(items) > limit,
    )


class StoredCompletions:
    def __init__(self, kv: KVStore) -> None:
        self.registry = Registry(kv, "chat_completions/", StoredCompletion, key=lambda record: record.id)

    async def fetch(self, completion_id: str) -> StoredCompletion:
        """The one way to a stored completion by id: one the caller may not read does not exist for it."""
        record = await self.registry.get(completion_id)
        if record is None or not auth.can("read", "chat_completion", completion_id, record.owner):
            raise not_found(f"chat completion '{completion_id}' not found", param="completion_id")
        return record

    async def visible(self) -> list[StoredCompletion]:
        """Every stored completion the caller may list."""
        return [r for r in await self.registry.list() if auth.can("read", "chat_completion", r.id, r.owner)]

    async def _unique_id(self, upstream_id: Any) -> str:
        """The upstream's completion id, unless it has none or one already stored (upstreams such as local
        servers reuse ids): then one of Lamina's own."""
        if isinstance(upstream_id, str) and upstream_id and await self.registry.get(upstream_id) is None:
            return upstream_id
        return "chatcmpl-" + secrets.token_hex(12)

    async def store(self, request: dict[str, Any], completion: dict[str, Any]) -> None:
        """Store `completion` (a `chat.completion` dict, whose `id` may be replaced by a unique one), owned by the
        current caller."""
        owner = auth.owner()
        completion_id = completion["id"] = await self._unique_id(completion.get("id"))
        auth.require("create", "chat_completion", completion_id, owner)
        metadata = request.get("metadata") or {}
        completion["metadata"] = metadata
        await self.registry.put(
            StoredCompletion(
                id=completion_id,
                completion=completion,
                input_messages=request["messages"],
                model=request["model"],
                metadata=metadata,
                order=f"{time.time_ns():020d}",
                owner=owner,
            )
        )

    def store_stream(
        self, request: dict[str, Any], chunks: AsyncIterator[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        """Relay a stream's chunks, and store the completion they make once the stream has ended."""

        async def relay() -> AsyncIterator[dict[str, Any]]:
            assembled = _Assembly()
            completion_id: str | None = None
            try:
                async for chunk in chunks:
                    if completion_id is None:
                        completion_id = await self._unique_id(chunk.get("id"))
                    chunk["id"] = completion_id  # every chunk names the id the completion is stored under
                    assembled.add(chunk)
                    yield chunk
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            await self.store(request, assembled.completion())

        return relay()

    async def list(self, query: ListCompletionsQuery, metadata: dict[str, str]) -> CompletionList:
        records = [
            record
            for record in await self.visible()
            if (query.model is None or record.model == query.model)
            and all(record.metadata.get(key) == value for key, value in metadata.items())
        ]
        records.sort(key=lambda record: (record.order, record.id), reverse=query.order == "desc")
        if query.after is not None:
            await self.fetch(query.after)
        return _page([record.completion for record in records], query.after, query.limit)

    async def retrieve(self, completion_id: str) -> dict[str, Any]:
        return (await self.fetch(completion_id)).completion

    async def update(self, completion_id: str, metadata: dict[str, str] | None) -> dict[str, Any]:
        record = await self.fetch(completion_id)
        auth.require("update", "chat_completion", completion_id, record.owner)
        record.metadata = metadata or {}
        record.completion["metadata"] = record.metadata
        await self.registry.put(record)
        return record.completion

    async def delete(self, completion_id: str) -> CompletionDeleted:
        record = await self.fetch(completion_id)
        auth.require("delete", "chat_completion", completion_id, record.owner)
        await self.registry.delete(completion_id)
        return CompletionDeleted(id=completion_id)

    async def messages(self, completion_id: str, query: ListMessagesQuery) -> CompletionList:
        record = await self.fetch(completion_id)
        messages = [_store_message(f"{record.id}-{index}", m) for index, m in enumerate(record.input_messages)]
        if query.order == "desc":
            messages.reverse()
        return _page(messages, query.after, query.limit)


def _store_message(message_id: str, message: dict[str, Any]) -> dict[str, Any]:
    """A request message as OpenAI lists it: its id, its text in `content`, its parts (if any) in `content_parts`."""
    content = message.get("content")
    shown = {**message, "id": message_id}
    if isinstance(content, list):
        shown["content"] = "".join(part.get("text", "") for part in content if part.get("type") == "text") or None
        shown["content_parts"] = content
    return shown


class _Assembly:
    """A streamed chat completion put back together from its chunks."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None

    def add(self, chunk: dict[str, Any]) -> None:
        if not self.head:
            self.head = {key: chunk.get(key) for key in ("id", "created", "model", "system_fingerprint")}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            built = self.choices.setdefault(
                index,
                {"index": index, "message": {"role": "assistant", "content": None}, "finish_reason": None},
            )
            delta = choice.get("delta") or {}
            message = built["message"]
            if delta.get("role"):
                message["role"] = delta["role"]
            if delta.get("content"):
                message["content"] = (message["content"] or "") + delta["content"]
            if delta.get("refusal"):
                message["refusal"] = (message.get("refusal") or "") + delta["refusal"]
            for call in delta.get("tool_calls") or ():
                calls = message.setdefault("tool_calls", [])
                position = call.get("index", len(calls))
                while len(calls) <= position:
                    calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                target = calls[position]
                if call.get("id"):
                    target["id"] = call["id"]
                function = call.get("function") or {}
                target["function"]["name"] += function.get("name") or ""
                target["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                built["finish_reason"] = choice["finish_reason"]
            if choice.get("logprobs") is not None:
                built["logprobs"] = choice["logprobs"]

    def completion(self) -> dict[str, Any]:
        return {
            **self.head,
            "object": "chat.completion",
            "choices": [self.choices[index] for index in sorted(self.choices)],
            "usage": self.usage,
        }
