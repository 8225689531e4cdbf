"""The conversations API has no providers: conversations and their items live in the stack's storage (see
`lamina.apis.conversations.router`), so a new storage backend (`register_storage_backends`) is how to keep them
elsewhere. The Protocol below is what other APIs rely on (the responses router reads and appends items)."""

from __future__ import annotations

from typing import Any, Protocol


class ConversationItems(Protocol):
    async def items(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every item of the conversation, oldest first; 404 when there is no such conversation."""
        ...

    async def append(self, conversation_id: str, items: list[dict[str, Any]]) -> None:
        """Append normalised items in one write: all of them become visible at once, or none."""
        ...
