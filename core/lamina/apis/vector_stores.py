"""Vector stores (OpenAI wire format) and raw vector IO, over a `vector_io` provider that keeps the chunks.

The router owns the OpenAI objects (stores, files, batches: statuses, counts, attributes), kept in memory and
written through to the stack's key-value store; the provider owns chunks, embeddings and the indexes.
Ingestion runs in background tasks; a file still `in_progress` after a restart is ingested again from scratch.

Search modes (an extension, `search_mode`): `vector` (cosine similarity), `keyword` (SQLite FTS5 BM25, score
b/(1+b) for b = -bm25) and `hybrid`: reciprocal-rank fusion, score = sum over both rankings of 1/(RRF_K + rank),
divided by its maximum 2/(RRF_K + 1) so a chunk ranked first by both scores 1.0.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import Response

from lamina.errors import not_found, validation_error
from lamina.http import json_response, parse_body, route, stack_of
from lamina.specs import ApiSpec

if TYPE_CHECKING:
    from lamina.apis.vector_stores_router import VectorStoresRouter
    from lamina.resolver import Stack

log = logging.getLogger("lamina")
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
STORES, FILES, BATCHES = "vector_stores/", "vector_store_files/", "vector_store_file_batches/"
POLL_AFTER_MS = "100"  # tells the openai client's *_and_poll helpers how soon to ask again


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


# ---- wire models -------------------------------------------------------------------------------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StaticChunking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_chunk_size_tokens: int = Field(ge=100, le=4096)
    chunk_overlap_tokens: int = Field(ge=0)

    @model_validator(mode="after")
    def _overlap(self) -> StaticChunking:
        if self.chunk_overlap_tokens > self.max_chunk_size_tokens // 2:
            raise ValueError("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens")
        return self


class ChunkingStrategy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["auto", "static"] = "auto"
    static: StaticChunking | None = None

    @model_validator(mode="after")
    def _static(self) -> ChunkingStrategy:
        if self.type == "static" and self.static is None:
            raise ValueError("a static chunking_strategy needs `static`")
        return self

    def resolved(self) -> dict[str, Any]:
        """As OpenAI reports it on a file: always the static sizes used."""
        static = self.static or StaticChunking(max_chunk_size_tokens=800, chunk_overlap_tokens=400)
        return {"type": "static", "static": static.model_dump()}


class StoreExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Literal["last_active_at"] = "last_active_at"
    days: int = Field(ge=1, le=365)


Attributes = dict[str, str | float | bool]


class CreateStore(_Open):
    name: str | None = None
    description: str | None = None
    file_ids: list[str] = []
    chunking_strategy: ChunkingStrategy | None = None
    expires_after: StoreExpiresAfter | None = None
    metadata: dict[str, str] | None = None
    embedding_model: str | None = None  # extension: defaults to vector_stores.default_embedding_model
    provider_id: str | None = None  # extension: which vector_io provider keeps the chunks


class UpdateStore(_Open):
    name: str | None = None
    expires_after: StoreExpiresAfter | None = None
    metadata: dict[str, str] | None = None


class AttachFile(_Open):
    file_id: str
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class UpdateFile(_Open):
    attributes: Attributes | None


class CreateBatch(_Open):
    file_ids: list[str] = []
    files: list[AttachFile] = []
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
    key: str
    value: str | float | bool | list[str | float | bool]

    @model_validator(mode="after")
    def _value_shape(self) -> Comparison:
        if (self.type in ("in", "nin")) != isinstance(self.value, list):
            raise ValueError(f"`{self.type}` takes {'a list' if self.type in ('in', 'nin') else 'a single value'}")
        return self


class Compound(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["and", "or"]
    filters: list[Comparison | Compound] = Field(min_length=1)


class RankingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranker: Literal["auto", "default-2024-11-15", "none"] = "auto"
    score_threshold: float = Field(0.0, ge=0.0, le=1.0)


class SearchRequest(_Open):
    query: str | list[str]
    max_num_results: int = Field(10, ge=1, le=50)
    filters: Comparison | Compound | None = None
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False
    search_mode: Literal["vector", "keyword", "hybrid"] = "vector"  # extension


class RawChunk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str
    metadata: dict[str, Any] = {}
    embedding: list[float] | None = None


class InsertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vector_store_id: str
    chunks: list[RawChunk] = Field(min_length=1)


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vector_store_id: str
    query: str | None = None
    embedding: list[float] | None = None
    k: int = Field(10, ge=1, le=1000)
    mode: Literal["vector", "keyword", "hybrid"] = "vector"
    filters: Comparison | Compound | None = None

    @model_validator(mode="after")
    def _something(self) -> QueryRequest:
        if self.query is None and self.embedding is None:
            raise ValueError("give `query` (text) or `embedding`")
        if self.mode != "vector" and self.query is None:
            raise ValueError(f"mode `{self.mode}` needs a text `query`")
        return self


class PageQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None


# ---- filters and ranking -------------------------------------------------------------------------------------


def matches(condition: Comparison | Compound | None, attributes: dict[str, Any]) -> bool:
    if condition is None:
        return True
    if isinstance(condition, Compound):
        results = (matches(sub, attributes) for sub in condition.filters)
        return all(results) if condition.type == "and" else any(results)
    present = condition.key in attributes
    actual, wanted, kind = attributes.get(condition.key), condition.value, condition.type
    if kind == "ne":
        return not present or actual != wanted
    if kind == "nin":
        return not present or actual not in wanted  # type: ignore[operator]
    if not present:
        return False
    if kind == "eq":
        return actual == wanted
    if kind == "in":
        return actual in wanted  # type: ignore[operator]
    numeric = (int, float)
    comparable = (isinstance(actual, numeric) and isinstance(wanted, numeric)) or (
        isinstance(actual, str) and isinstance(wanted, str)
    )
    if not comparable or isinstance(actual, bool) or isinstance(wanted, bool):
        return False
    return {"gt": actual > wanted, "gte": actual >= wanted, "lt": actual < wanted, "lte": actual <= wanted}[kind]  # type: ignore[operator]


def fuse(rankings: list[list[Hit]]) -> list[Hit]:
    """Reciprocal-rank fusion, normalised so a chunk first in every ranking scores 1.0."""
    scores: dict[int, float] = {}
    hits: dict[int, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (RRF_K + rank)
            hits.setdefault(hit.id, hit)
    best = len(rankings) / (RRF_K + 1)
    fused = [hits[i].model_copy(update={"score": score / best}) for i, score in scores.items()]
    return sorted(fused, key=lambda hit: -hit.score)


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if not key.startswith("_")}


def paginate(records: list[dict[str, Any]], query: PageQuery) -> dict[str, Any]:
    ordered = sorted(records, key=lambda r: r["_order"], reverse=query.order == "desc")
    ids = [r["id"] for r in ordered]
    for cursor, name in ((query.after, "after"), (query.before, "before")):
        if cursor is not None and cursor not in ids:
            raise not_found(f"'{cursor}' (the `{name}` cursor) not found", param=name)
    if query.after is not None:
        ordered = ordered[ids.index(query.after) + 1 :]
    if query.before is not None:
        ordered = ordered[: [r["id"] for r in ordered].index(query.before)]
        ordered = ordered[-query.limit :] if len(ordered) > query.limit else ordered
    page = ordered[: query.limit]
    data = [public(r) for r in page]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > query.limit,
    }


async def _router(providers: dict[str, Any], stack: Stack) -> VectorStoresRouter:
    from lamina.apis.vector_stores_router import VectorStoresRouter

    router = VectorStoresRouter(providers, stack)
    await router.start()
    return router


# ---- routes --------------------------------------------------------------------------------------------------


def _vs(request: Request) -> VectorStoresRouter:
    return stack_of(request).apis["vector_io"]


def _page_query(request: Request) -> PageQuery:
    try:
        return PageQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise validation_error(exc) from None


def _polled(obj: dict[str, Any]) -> Response:
    response = json_response(obj)
    response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return response


async def create_store(request: Request) -> Response:
    """Create a vector store (optionally with files to ingest)."""
    return json_response(await _vs(request).create_store(await parse_body(request, CreateStore)))


async def list_stores(request: Request) -> Response:
    """List vector stores."""
    return json_response(_vs(request).list_stores(_page_query(request)))


async def get_store(request: Request) -> Response:
    """Retrieve a vector store."""
    return _polled(_vs(request).store_view(request.path_params["store_id"]))


async def update_store(request: Request) -> Response:
    """Modify a vector store's name, metadata or expiry."""
    body = await parse_body(request, UpdateStore)
    return json_response(await _vs(request).update_store(request.path_params["store_id"], body))


async def delete_store(request: Request) -> Response:
    """Delete a vector store and its chunks."""
    store_id = request.path_params["store_id"]
    await _vs(request).delete_store(store_id)
    return json_response({"id": store_id, "object": "vector_store.deleted", "deleted": True})


async def search_store(request: Request) -> Response:
    """Search a vector store (`search_mode`: vector, keyword or hybrid)."""
    body = await parse_body(request, SearchRequest)
    return json_response(await _vs(request).search(request.path_params["store_id"], body))


async def attach_file(request: Request) -> Response:
    """Add a file to a vector store; ingestion runs in the background."""
    body = await parse_body(request, AttachFile)
    return _polled(await _vs(request).attach(request.path_params["store_id"], body))


async def list_store_files(request: Request) -> Response:
    """List a vector store's files (`filter` by status)."""
    return json_response(_vs(request).list_files(request.path_params["store_id"], _page_query(request)))


async def get_store_file(request: Request) -> Response:
    """Retrieve a vector store file."""
    record = _vs(request)._file(request.path_params["store_id"], request.path_params["file_id"])
    return _polled(public(record))


async def update_store_file(request: Request) -> Response:
    """Replace a vector store file's attributes."""
    body = await parse_body(request, UpdateFile)
    params = request.path_params
    return json_response(await _vs(request).update_file(params["store_id"], params["file_id"], body.attributes))


async def delete_store_file(request: Request) -> Response:
    """Remove a file from a vector store (the file itself stays)."""
    params = request.path_params
    await _vs(request).detach(params["store_id"], params["file_id"])
    return json_response({"id": params["file_id"], "object": "vector_store.file.deleted", "deleted": True})


async def store_file_content(request: Request) -> Response:
    """The parsed text of a vector store file, chunk by chunk."""
    params = request.path_params
    return json_response(await _vs(request).file_content(params["store_id"], params["file_id"]))


async def create_batch(request: Request) -> Response:
    """Add several files to a vector store at once."""
    body = await parse_body(request, CreateBatch)
    return _polled(await _vs(request).create_batch(request.path_params["store_id"], body))


async def get_batch(request: Request) -> Response:
    """Retrieve a file batch."""
    return _polled(_vs(request).batch_view(request.path_params["store_id"], request.path_params["batch_id"]))


async def cancel_batch(request: Request) -> Response:
    """Cancel a file batch: files still in progress are cancelled."""
    params = request.path_params
    return json_response(await _vs(request).cancel_batch(params["store_id"], params["batch_id"]))


async def list_batch_files(request: Request) -> Response:
    """List the files of a batch."""
    params = request.path_params
    return json_response(_vs(request).list_files(params["store_id"], _page_query(request), params["batch_id"]))


async def insert_chunks(request: Request) -> Response:
    """Insert chunks (with or without precomputed embeddings) into a vector store."""
    return json_response(await _vs(request).insert_chunks(await parse_body(request, InsertRequest)))


async def query_chunks(request: Request) -> Response:
    """Query a vector store with text or an embedding; returns chunks and scores."""
    return json_response(await _vs(request).query_chunks(await parse_body(request, QueryRequest)))


VS = "/vector_stores/{store_id}"
API = ApiSpec(
    name="vector_io",
    description="OpenAI vector stores (files, batches, search) and raw vector IO",
    router=_router,
    needs=("inference", "files"),
    routes=[
        route("POST", "/vector_stores", create_store, body=CreateStore),
        route("GET", "/vector_stores", list_stores, query=PageQuery),
        route("GET", VS, get_store),
        route("POST", VS, update_store, body=UpdateStore),
        route("DELETE", VS, delete_store),
        route("POST", VS + "/search", search_store, body=SearchRequest),
        route("POST", VS + "/files", attach_file, body=AttachFile),
        route("GET", VS + "/files", list_store_files, query=PageQuery),
        route("GET", VS + "/files/{file_id}", get_store_file),
        route("POST", VS + "/files/{file_id}", update_store_file, body=UpdateFile),
        route("DELETE", VS + "/files/{file_id}", delete_store_file),
        route("GET", VS + "/files/{file_id}/content", store_file_content),
        route("POST", VS + "/file_batches", create_batch, body=CreateBatch),
        route("GET", VS + "/file_batches/{batch_id}", get_batch),
        route("POST", VS + "/file_batches/{batch_id}/cancel", cancel_batch),
        route("GET", VS + "/file_batches/{batch_id}/files", list_batch_files, query=PageQuery),
        route("POST", "/vector-io/insert", insert_chunks, body=InsertRequest),
        route("POST", "/vector-io/query", query_chunks, body=QueryRequest),
    ],
)
