"""What a vector_io provider implements: it keeps the chunks of each vector store, their embeddings, their
attributes and whatever indexes it searches them with. The router (`lamina.apis.vector_io.router`) owns the
OpenAI objects (stores, files, batches) and the ingestion jobs; it calls the provider through these methods only.

Chunks
    A chunk is a piece of text with its embedding. `Chunk.file_id` names the vector store file it was cut from
    (None for chunks inserted through `/v1/vector-io/insert`); `metadata` is returned as given (the router puts
    `file_id` and `chunk_index` there for file chunks); `attributes` are what filters test: the file's attributes
    for file chunks, the inserted metadata for raw chunks. Chunk ids are the provider's, as strings.

Methods (all async; store ids are the router's `vs_...` ids)
    `create_store(store_id) -> None`
        Make room for a new store. Its embedding dimension is fixed by the first insert.
    `delete_store(store_id) -> None`
        Forget the store and every chunk in it. Unknown ids are no error.
    `insert(store_id, chunks: list[Chunk], embeddings) -> list[str]`
        Keep `chunks` with their embeddings (`embeddings[i]` belongs to `chunks[i]`; any 2-D array-like of
        floats: a list of lists or a numpy array). Returns the new chunk ids in the same order. A dimension
        that differs from the store's, a count mismatch or a non-finite number is a 400 (`lamina.errors.
        bad_request`). Once `insert` returns, the chunks are durable and searchable.
    `delete_file_chunks(store_id, file_id) -> None`
        Remove every chunk of that file, at once for searches too.
    `file_chunks(store_id, file_id) -> list[str]`
        The texts of the file's chunks in insertion order.
    `update_attributes(store_id, file_id, attributes: dict) -> None`
        Replace the attributes of every chunk of that file (the router calls it when `POST
        /v1/vector_stores/{id}/files/{file_id}` changes a file's attributes).
    `count(store_id) -> int`
        How many chunks the store holds (0 for an unknown store).
    `query(store_id, *, vector: list[float] | None, text: str | None, k: int, filters: Filter | None,
           mode: "vector" | "keyword" | "hybrid") -> list[Hit]`
        The best `k` chunks (fewer when the store holds fewer that qualify), best first:
        - mode "vector": by cosine similarity to `vector` (`Hit.score` = the similarity);
        - mode "keyword": by BM25 relevance of `text`, score b/(1+b) for b = -bm25 >= 0, so in [0, 1);
        - mode "hybrid": reciprocal-rank fusion (`search.fuse`) of the vector and the keyword rankings, each
          taken `search.hybrid_depth(k)` deep, score normalised so that first in both rankings scores 1.0.
        A score of 0 or less is no match (`search.no_match`): the router drops such hits and fusion ranks none.
        `filters` (an OpenAI comparison/compound filter, `types.Comparison | types.Compound`) keeps only chunks
        whose attributes match, with exactly the semantics of `search.matches`, applied BEFORE ranking: the
        answer is the best k among matching chunks, and for hybrid each ranking is over matching chunks.
        The router only passes a mode or `filters` the provider's `capabilities` declare.
    `close() -> None` (optional)
        Called once at shutdown, after the router has stopped its ingestion workers.

Capabilities
    `capabilities: frozenset[str]`, a subset of {"vector", "keyword", "hybrid", "filters"}, says what `query`
    does itself. Where one is missing the router does it, reusing the one query embedding it computed:
    - no "filters": the router queries without filters, tests `Hit.attributes` with `search.matches` and asks
      again with a larger k (4x each round, up to `count(store_id)`) until enough hits pass;
    - no "hybrid" (but "vector" and "keyword"): the router asks for each ranking `hybrid_depth(k)` deep
      (filtered as above) and fuses them with `search.fuse`;
    - no "keyword" (or no "vector"): searches in that mode (and hybrid) answer 400.
    A provider that declares a capability must give the same results as the router's fallback would.

Consistency
    The router drops hits of files that are not `completed` (being ingested, cancelled, detached mid-way) and
    widens the same way when that leaves too few, so a provider need not know files' statuses. Several
    processes may share one provider's storage (two `lamina run` over one data directory); a provider whose
    indexes live in memory must pick up the others' writes before it answers a query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from lamina.apis.vector_io.types import Comparison, Compound

    Filter = Comparison | Compound

CAPABILITIES = frozenset({"vector", "keyword", "hybrid", "filters"})
Mode = Literal["vector", "keyword", "hybrid"]


@dataclass(frozen=True)
class Chunk:
    """A chunk to insert (a dataclass: ingestion and benchmarks make many)."""

    content: str
    file_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


class Hit(BaseModel):
    """A chunk a provider found."""

    id: str
    content: str
    file_id: str | None = None
    metadata: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    score: float


class VectorIOProvider(Protocol):
    capabilities: frozenset[str]

    async def create_store(self, store_id: str) -> None: ...

    async def delete_store(self, store_id: str) -> None: ...

    async def insert(self, store_id: str, chunks: list[Chunk], embeddings: Any) -> list[str]: ...

    async def delete_file_chunks(self, store_id: str, file_id: str) -> None: ...

    async def file_chunks(self, store_id: str, file_id: str) -> list[str]: ...

    async def update_attributes(self, store_id: str, file_id: str, attributes: dict[str, Any]) -> None: ...

    async def count(self, store_id: str) -> int: ...

    async def query(
        self,
        store_id: str,
        *,
        vector: list[float] | None,
        text: str | None,
        k: int,
        filters: Filter | None,
        mode: Mode,
    ) -> list[Hit]: ...
