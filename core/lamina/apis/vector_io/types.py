"""The vector stores API's wire models (OpenAI's vector stores, plus raw vector IO) and config."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict


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
    # The schema says what `_static` checks: `static` goes with type static, and only there is it required.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"properties": {"type": {"const": "auto"}}},
                {
                    "properties": {"type": {"const": "static"}, "static": {"type": "object"}},
                    "required": ["type", "static"],
                },
            ]
        },
    )

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


SCALAR: JsonDict = {"type": ["string", "number", "boolean"]}


class Comparison(BaseModel):
    # The schema says what `_value_shape` checks: `in`/`nin` take a list, the others one value.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"properties": {"type": {"enum": ["eq", "ne", "gt", "gte", "lt", "lte"]}, "value": SCALAR}},
                {"properties": {"type": {"enum": ["in", "nin"]}, "value": {"type": "array", "items": SCALAR}}},
            ]
        },
    )

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

    # OpenAI's rankers ("auto", "default-2024-11-15", "none": the search's own scores), or a reranker model of the
    # rerank API, which reorders the best candidates and gives them its scores.
    ranker: str = Field("auto", min_length=1)
    score_threshold: float = Field(0.0, ge=0.0, le=1.0)


SearchText = Annotated[str, Field(pattern=r"\S")]  # not blank


class SearchRequest(_Open):
    query: SearchText | Annotated[list[SearchText], Field(min_length=1)]
    max_num_results: int = Field(10, ge=1, le=50)
    filters: Comparison | Compound | None = None
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False
    search_mode: Literal["vector", "keyword", "hybrid"] = "vector"  # extension


class SearchResult(BaseModel):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, Any]
    content: list[dict[str, Any]]


class SearchResults(BaseModel):
    """The answer of a search (documented in /v1/openapi.json)."""

    object: Literal["vector_store.search_results.page"]
    search_query: str | list[str]
    data: list[SearchResult]
    has_more: bool
    next_page: str | None


class RawChunk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str
    metadata: dict[str, Any] = {}
    embedding: list[float] | None = None

    @model_validator(mode="after")
    def _file_id(self) -> RawChunk:
        # Search results name a chunk's file by `metadata.file_id`: it is an id, a string, or absent.
        if not isinstance(self.metadata.get("file_id", ""), str):
            raise ValueError("metadata.file_id must be a string (a file id)")
        return self


class InsertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vector_store_id: str
    chunks: list[RawChunk] = Field(min_length=1)


class QueryRequest(BaseModel):
    # The schema says what `_something` checks: a text query, or an embedding (and then, without text, mode vector).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["query"], "properties": {"query": {"type": "string"}}},
                {
                    "required": ["embedding"],
                    "properties": {"embedding": {"type": "array"}, "mode": {"const": "vector"}},
                },
            ]
        },
    )

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


REWRITE_PROMPT = (
    "Rewrite this search query for a semantic search over documents: keep its meaning, add the synonyms and "
    "related terms a relevant passage would use, and answer with the rewritten query alone, on one line.\n\n"
    "Query: {query}"
)


class QueryRewriteConfig(BaseModel):
    """`apis.vector_io.query_rewrite`: how a search asked with `rewrite_query: true` rewrites its query first."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # a chat model of the inference API; without one, rewrite_query is refused (400)
    prompt: str = Field(REWRITE_PROMPT, pattern=r"\{query\}")  # `{query}` stands for the query as asked
    max_tokens: int = Field(80, ge=1)


class VectorIOConfig(BaseModel):
    """`apis.vector_io` in the run config."""

    model_config = ConfigDict(extra="forbid")

    query_rewrite: QueryRewriteConfig = QueryRewriteConfig()

    default_embedding_model: str | None = None  # default: the first embedding model the inference API lists
    ingestion_concurrency: int = Field(4, ge=1)  # files ingested at once (their embedding calls can merge)
    embedding_batch_size: int = Field(32, ge=1)  # chunks per embeddings call
    ingestion_lease_seconds: float = Field(30.0, gt=0)  # a worker that stops renewing loses its job after this
