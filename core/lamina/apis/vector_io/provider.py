"""What a vector_io provider implements: it keeps the chunks, their embeddings and the indexes of each store."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel


class Hit(BaseModel):
    """A chunk a provider found: `metadata` holds `file_id` for chunks of vector store files."""

    id: int
    content: str
    metadata: dict[str, Any] = {}
    score: float


class VectorIOProvider(Protocol):
    async def create_store(self, store_id: str) -> None: ...

    async def delete_store(self, store_id: str) -> None: ...

    async def insert(self, store_id: str, chunks: list[tuple[str, dict[str, Any]]], embeddings: Any) -> list[int]: ...

    async def delete_file_chunks(self, store_id: str, file_id: str) -> None: ...

    async def file_chunks(self, store_id: str, file_id: str) -> list[str]: ...

    async def query_vector(self, store_id: str, embedding: list[float], k: int) -> list[Hit]: ...

    async def query_keyword(self, store_id: str, text: str, k: int) -> list[Hit]: ...

    async def count(self, store_id: str) -> int: ...
