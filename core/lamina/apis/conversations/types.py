"""The conversations API's wire models (OpenAI's conversations and their items), its stored records and config.

Items are the Responses API's items (messages, function calls and their outputs, file search calls): the
conversations API keeps them, the responses API reads and appends them. An item on the wire is a plain dict,
normalised by `normalize_item` (an id, and message content as a list of typed parts), because the item types
are open-ended and a client's fields must come back exactly as sent.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from lamina.access import Owner
from lamina.errors import not_found

Item = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


class _Item(BaseModel):
    model_config = ConfigDict(extra="allow")  # fields of OpenAI's we do not model are kept as sent

    id: str | None = None


class InputText(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["input_text", "output_text", "text", "refusal", "summary_text"]
    text: str | None = None
    refusal: str | None = None


class OtherPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["input_image", "input_file", "input_audio"]


def _part_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "other" if kind in ("input_image", "input_file", "input_audio") else "text"


ContentPart = Annotated[
    Annotated[InputText, Tag("text")] | Annotated[OtherPart, Tag("other")], Discriminator(_part_kind)
]


class MessageItem(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(_Item):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[dict[str, Any]]
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FileSearchCallItem(_Item):
    type: Literal["file_search_call"]
    id: str  # required here: the call's own id
    queries: list[str]
    status: str
    results: list[dict[str, Any]] | None = None


class McpCallItem(_Item):
    """An earlier MCP tool call, sent back to the model as a tool call and its result."""

    type: Literal["mcp_call"]
    id: str = Field(min_length=1)  # required here: the call's own id
    name: str = Field(min_length=1)
    arguments: str
    server_label: str | None = None
    output: str | None = None
    error: str | None = None


class ItemReference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["item_reference"]
    id: str


class OtherItem(_Item):
    """Item types the orchestrator does not act on (reasoning, MCP listings and approvals, web search calls, ...):
    kept, not sent."""

    type: Literal[
        "reasoning",
        "web_search_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "custom_tool_call",
        "custom_tool_call_output",
    ]


def _item_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind is None and isinstance(value, dict) and "role" in value:
        return "message"
    known = ("message", "function_call", "function_call_output", "file_search_call", "mcp_call", "item_reference")
    return kind if kind in known else "other"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[FileSearchCallItem, Tag("file_search_call")]
    | Annotated[McpCallItem, Tag("mcp_call")]
    | Annotated[ItemReference, Tag("item_reference")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_kind),
]

ID_PREFIXES = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "file_search_call": "fs",
}


def normalize_item(item: BaseModel) -> Item:
    """An input item as it is stored and listed: with an id, and a message's content as a list of parts."""
    data = item.model_dump(mode="json", exclude_none=True)
    if isinstance(item, MessageItem):
        data["type"] = "message"
        if isinstance(item.content, str):
            kind = "output_text" if item.role == "assistant" else "input_text"
            part: dict[str, Any] = {"type": kind, "text": item.content}
            if kind == "output_text":
                part["annotations"] = []
            data["content"] = [part]
        data.setdefault("status", "completed")
    elif isinstance(item, (FunctionCallItem, FunctionCallOutputItem)):
        data.setdefault("status", "completed")
    if not data.get("id"):
        data["id"] = new_id(ID_PREFIXES.get(data.get("type", ""), "item"))
    return data


class CreateConversation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[InputItem] | None = Field(None, max_length=20)
    metadata: dict[str, str] | None = None


class UpdateConversation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: dict[str, str]


class CreateItems(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[InputItem] = Field(min_length=1, max_length=20)


class ItemsQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    include: list[str] | None = None


class Conversation(BaseModel):
    """A conversation as stored."""

    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    metadata: dict[str, str] = {}
    owner: Owner | None = None  # who created it (auth); None: made while auth was off

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude={"owner"})


class ItemBatch(BaseModel):
    """Items appended to a conversation in one write (a response's input and output, or one items.create)."""

    conversation_id: str
    key: str  # orders batches: nanoseconds since the epoch, then a random suffix
    items: list[Item]
    owner: Owner | None = None


class ConversationsConfig(BaseModel):
    """`apis.conversations` in the run config."""

    model_config = ConfigDict(extra="forbid")


def page(items: list[Item], query: ItemsQuery) -> dict[str, Any]:
    """One page of items in the order asked, after the `after` cursor (404 when it names no item)."""
    ordered = items if query.order == "asc" else items[::-1]
    if query.after is not None:
        ids = [item.get("id") for item in ordered]
        if query.after not in ids:
            raise not_found(f"no item '{query.after}' (the `after` cursor) in this list", param="after")
        ordered = ordered[ids.index(query.after) + 1 :]
    data = ordered[: query.limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > query.limit,
    }
