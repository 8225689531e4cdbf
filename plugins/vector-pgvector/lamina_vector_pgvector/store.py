"""Chunks in one Postgres table; each store's vectors indexed by an HNSW index of its own.

A store's dimension is fixed by its first insert. Until it holds `exact_below` chunks a store has no index and
is searched exactly (a scan of a few thousand vectors is fast, and exact); the insert that reaches it builds the
store's index in bulk: a partial HNSW index on `embedding::vector(D)` for the rows of that store (one table holds
every store, so the column itself has no dimension). Queries name the store as a literal and order by the same expression, so the planner can match the
index; store ids are checked against a strict pattern before they go into SQL.

Nothing lives in memory: every replica reads the same tables, so a write by one is searchable by all at once.

pgvector's HNSW (before 0.8) filters after the graph walk: a selective filter can leave fewer than k hits. The
provider then walks again with a beam widened by the share of chunks that passed (at most ef_search 1000), and if
that is still short, compares the query with every matching chunk (an exact scan, which the planner does without the index because it orders by the undimensioned
column).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from typing import Any

import asyncpg
from lamina.apis.vector_io.provider import Chunk, Hit
from lamina.apis.vector_io.search import RRF_K, hybrid_depth
from lamina.apis.vector_io.types import Comparison, Compound
from lamina.errors import bad_request
from lamina_storage_postgres.database import Schema, create_pool, prepare, reachable

log = logging.getLogger("lamina.vector_pgvector")

SCHEMA = Schema(
    "pgvector",
    [
        "CREATE EXTENSION IF NOT EXISTS vector;"
        "CREATE TABLE lamina_vector_stores (id text PRIMARY KEY, dimension integer);"
        "CREATE TABLE lamina_vector_chunks ("
        " id bigserial PRIMARY KEY,"
        " store_id text NOT NULL REFERENCES lamina_vector_stores (id) ON DELETE CASCADE,"
        " file_id text,"
        " content text NOT NULL,"
        " metadata text NOT NULL,"  # returned exactly as given, so JSON text rather than jsonb
        " attributes jsonb NOT NULL DEFAULT '{}',"
        " embedding vector NOT NULL,"
        " search_text tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED);"
        "CREATE INDEX lamina_vector_chunks_by_file ON lamina_vector_chunks (store_id, file_id, id);"
        "CREATE INDEX lamina_vector_chunks_text ON lamina_vector_chunks USING gin (search_text);",
    ],
)
STORE_ID = re.compile(r"^[A-Za-z0-9_\-]{1,48}$")
WORD = re.compile(r"\w+")
WIDEST_EF = 1000  # pgvector's maximum hnsw.ef_search
COLUMNS = "c.id, c.content, c.file_id, c.metadata, c.attributes::text AS attributes"


def _store(store_id: str) -> str:
    """The store id as an SQL literal (partial indexes are matched on literals); ids are the router's."""
    if not STORE_ID.match(store_id):
        raise bad_request(f"vector store id '{store_id}' cannot be used with pgvector", param="vector_store_id")
    return f"'{store_id}'"


def _index_name(store_id: str) -> str:
    return f'"lamina_hnsw_{store_id}"'


def _vector_text(values: Any) -> str:
    return "[" + ",".join(repr(float(x)) for x in values) + "]"


def _bind(args: list[Any], value: Any) -> str:
    args.append(value)
    return f"${len(args)}"


def _equal(attribute: str, wanted: Any, args: list[Any]) -> str:
    """SQL true where the jsonb `attribute` equals `wanted` as Python's == does (True == 1, 1 == 1.0)."""
    if isinstance(wanted, str):
        return f"({attribute} = {_bind(args, json.dumps(wanted))}::jsonb)"
    number = _bind(args, float(wanted))
    return (
        f"(CASE jsonb_typeof({attribute}) WHEN 'number' THEN ({attribute})::float8 = {number}::float8 "
        f"WHEN 'boolean' THEN (CASE WHEN {attribute} = 'true'::jsonb THEN 1.0 ELSE 0.0 END) = {number}::float8 "
        "ELSE false END)"
    )


def filter_sql(condition: Comparison | Compound, args: list[Any], column: str = "c.attributes") -> str:
    """An SQL condition on the jsonb `column`, never NULL, true exactly where `search.matches` is."""
    if isinstance(condition, Compound):
        parts = [filter_sql(sub, args, column) for sub in condition.filters]
        return "(" + (" AND " if condition.type == "and" else " OR ").join(parts) + ")"
    kind, wanted = condition.type, condition.value
    if kind in ("gt", "gte", "lt", "lte") and isinstance(wanted, (bool, list)):
        return "false"  # an order on booleans (or lists) matches nothing
    attribute = f"({column} -> {_bind(args, condition.key)}::text)"
    if kind in ("eq", "ne"):
        test = _equal(attribute, wanted, args)
    elif kind in ("in", "nin"):
        tests = [_equal(attribute, value, args) for value in wanted]  # type: ignore[union-attr]
        test = "(" + " OR ".join(tests) + ")" if tests else "false"
    else:
        operator = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[kind]
        if isinstance(wanted, str):
            # The C collation orders by code point, as Python compares strings.
            test = (
                f"(jsonb_typeof({attribute}) = 'string' AND "
                f"({attribute} #>> '{{}}') COLLATE \"C\" {operator} {_bind(args, wanted)}::text)"
            )
        else:
            test = (
                f"(jsonb_typeof({attribute}) = 'number' AND ({attribute})::float8 {operator} "
                f"{_bind(args, float(wanted))}::float8)"
            )
    test = f"COALESCE({test}, false)"
    return f"(NOT {test})" if kind in ("ne", "nin") else test


def _or_query(text: str) -> str | None:
    """The words of `text` as a web-search query matching any of them (as the SQLite provider's FTS5 OR)."""
    words = list(dict.fromkeys(WORD.findall(text.lower())))
    return " or ".join(f'"{word}"' for word in words) if words else None


class PgvectorVectorIO:
    def __init__(self, pool: asyncpg.Pool, config: Any, store: str) -> None:
        self.pool = pool
        self.config = config
        self.store = store  # how 503s name this provider's database
        self.capabilities = frozenset(config.capabilities)
        self.dimensions: dict[str, int] = {}
        self.indexed: set[str] = set()  # stores seen with a valid index: inserts need not count their chunks

    @classmethod
    async def open(cls, url: str, config: Any, store: str) -> PgvectorVectorIO:
        pool = await create_pool(
            url,
            store=store,
            min_size=1,
            max_size=config.max_connections,
            timeout=5.0,
            settings={"hnsw.ef_search": str(config.ef_search)},
        )
        try:
            await prepare(pool, SCHEMA, auto_migrate=config.migrate, store=store)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, config, store)

    async def close(self) -> None:
        await self.pool.close()

    async def ready(self) -> None:
        """The readiness check (`/v1/health/ready`): the database answers, or a 503 names it."""
        async with reachable(self.store):
            await self.pool.fetchval("SELECT 1")

    # -- stores

    async def create_store(self, store_id: str) -> None:
        _store(store_id)
        async with reachable(self.store):
            await self.pool.execute(
                "INSERT INTO lamina_vector_stores (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", store_id
            )

    async def delete_store(self, store_id: str) -> None:
        _store(store_id)
        async with reachable(self.store), self.pool.acquire() as connection, connection.transaction():
            await connection.execute(f"DROP INDEX IF EXISTS {_index_name(store_id)}")
            await connection.execute("DELETE FROM lamina_vector_stores WHERE id = $1", store_id)
        self.dimensions.pop(store_id, None)
        self.indexed.discard(store_id)

    async def count(self, store_id: str) -> int:
        async with reachable(self.store):
            return int(
                await self.pool.fetchval("SELECT count(*) FROM lamina_vector_chunks WHERE store_id = $1", store_id)
            )

    async def _dimension(self, store_id: str) -> int | None:
        # A store's dimension never changes once set (and ids are never reused), so it is remembered: a search is
        # then one round trip.
        if store_id not in self.dimensions:
            async with reachable(self.store):
                dimension = await self.pool.fetchval(
                    "SELECT dimension FROM lamina_vector_stores WHERE id = $1", store_id
                )
            if dimension is None:
                return None
            self.dimensions[store_id] = dimension
        return self.dimensions[store_id]

    # -- writes

    async def insert(self, store_id: str, chunks: list[Chunk], embeddings: Any) -> list[str]:
        literal = _store(store_id)
        rows = [list(map(float, row)) for row in embeddings]
        if len(rows) != len(chunks) or len({len(row) for row in rows}) > 1:
            raise bad_request("need one embedding per chunk, all of one dimension", param="chunks")
        if not chunks:
            return []
        if not all(math.isfinite(x) for row in rows for x in row):
            raise bad_request("embeddings must be finite numbers", param="chunks")
        dimension = len(rows[0])
        async with reachable(self.store), self.pool.acquire() as connection, connection.transaction():
            stored = await connection.fetchrow(
                "SELECT dimension FROM lamina_vector_stores WHERE id = $1 FOR UPDATE", store_id
            )
            if stored is None:
                raise bad_request(f"vector store '{store_id}' has no index in this provider", param="vector_store_id")
            if stored["dimension"] is not None and stored["dimension"] != dimension:
                raise bad_request(
                    f"embeddings have {dimension} dimensions; this vector store holds {stored['dimension']}",
                    param="embedding",
                )
            if stored["dimension"] is None:
                await connection.execute(
                    "UPDATE lamina_vector_stores SET dimension = $2 WHERE id = $1", store_id, dimension
                )
            ids = await connection.fetch(
                "INSERT INTO lamina_vector_chunks (store_id, file_id, content, metadata, attributes, embedding) "
                # Vectors travel as text (asyncpg has no codec for pgvector's type) and are parsed by Postgres.
                "SELECT $1, f, c, m, a::jsonb, e::vector FROM unnest($2::text[], $3::text[], $4::text[], "
                "$5::text[], $6::text[]) WITH ORDINALITY AS t(f, c, m, a, e, n) ORDER BY n RETURNING id",
                store_id,
                [chunk.file_id for chunk in chunks],
                [chunk.content for chunk in chunks],
                [json.dumps(chunk.metadata) for chunk in chunks],
                [json.dumps(chunk.attributes) for chunk in chunks],
                [_vector_text(row) for row in rows],
            )
            count = (
                0
                if store_id in self.indexed
                else await connection.fetchval(
                    "SELECT count(*) FROM lamina_vector_chunks WHERE store_id = $1", store_id
                )
            )
        if count >= self.config.exact_below:
            await self._ensure_index(store_id, literal, dimension)
        return [str(i) for i in sorted(row["id"] for row in ids)]  # ids are drawn in row order

    async def _ensure_index(self, store_id: str, literal: str, dimension: int) -> None:
        """Build the store's HNSW index in bulk over the chunks it holds (several times faster than growing it
        one insert at a time; from then on each insert adds to it). CONCURRENTLY, outside any transaction, so
        writes to every store go on meanwhile; one replica at a time per store (an advisory lock), and a build
        a crash left invalid is dropped and done again."""
        name = _index_name(store_id)
        valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)"
        async with reachable(self.store), self.pool.acquire() as connection:
            if await connection.fetchval(valid, name):
                self.indexed.add(store_id)
                return
            if not await connection.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name):
                return  # another replica is building it; searches are exact until it is done
            try:
                if await connection.fetchval(valid, name) is False:
                    await connection.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                started = time.perf_counter()
                await connection.execute(f"SET maintenance_work_mem = '{int(self.config.build_memory_mb)}MB'")
                await connection.execute(
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON lamina_vector_chunks "
                    f"USING hnsw ((embedding::vector({dimension})) vector_cosine_ops) "
                    f"WITH (m = {int(self.config.m)}, ef_construction = {int(self.config.ef_construction)}) "
                    f"WHERE store_id = {literal}"
                )
                # Fresh statistics, or the planner still thinks the store holds a handful of rows and scans them.
                await connection.execute("ANALYZE lamina_vector_chunks")
                self.indexed.add(store_id)
                log.info("built the HNSW index of %s in %.1fs", store_id, time.perf_counter() - started)
            finally:
                await connection.execute("SELECT pg_advisory_unlock(hashtext($1))", name)

    async def update_attributes(self, store_id: str, file_id: str, attributes: dict[str, Any]) -> None:
        async with reachable(self.store):
            await self.pool.execute(
                "UPDATE lamina_vector_chunks SET attributes = $3::jsonb WHERE store_id = $1 AND file_id = $2",
                store_id,
                file_id,
                json.dumps(attributes),
            )

    async def delete_file_chunks(self, store_id: str, file_id: str) -> None:
        async with reachable(self.store):
            await self.pool.execute(
                "DELETE FROM lamina_vector_chunks WHERE store_id = $1 AND file_id = $2", store_id, file_id
            )

    # -- reads

    async def file_chunks(self, store_id: str, file_id: str) -> list[str]:
        async with reachable(self.store):
            rows = await self.pool.fetch(
                "SELECT content FROM lamina_vector_chunks WHERE store_id = $1 AND file_id = $2 ORDER BY id",
                store_id,
                file_id,
            )
        return [row["content"] for row in rows]

    async def query(
        self,
        store_id: str,
        *,
        vector: list[float] | None,
        text: str | None,
        k: int,
        filters: Comparison | Compound | None,
        mode: str,
    ) -> list[Hit]:
        literal = _store(store_id)
        if mode == "keyword":
            return await self._keyword(literal, text or "", k, filters)
        if vector is None:
            raise bad_request("a vector search needs a query vector", param="query")
        dimension = await self._dimension(store_id)
        if dimension is None:
            return []  # an empty (or unknown) store
        if len(vector) != dimension:
            raise bad_request(
                f"query embedding has {len(vector)} dimensions; this vector store holds {dimension}", param="embedding"
            )
        if mode == "hybrid":
            return await self._hybrid(literal, dimension, vector, text or "", k, filters)
        return await self._vector(literal, dimension, vector, k, filters)

    def _where(self, literal: str, filters: Comparison | Compound | None, args: list[Any]) -> str:
        return f"c.store_id = {literal}" + ("" if filters is None else " AND " + filter_sql(filters, args))

    async def _vector(
        self, literal: str, dimension: int, vector: list[float], k: int, filters: Comparison | Compound | None
    ) -> list[Hit]:
        args: list[Any] = [_vector_text(vector), k]
        where = self._where(literal, filters, args)
        distance = f"c.embedding::vector({dimension}) <=> CAST($1::text AS vector({dimension}))"
        graph = f"SELECT {COLUMNS}, 1 - ({distance}) AS score FROM lamina_vector_chunks c WHERE {where} ORDER BY {distance} LIMIT $2"
        async with reachable(self.store), self.pool.acquire() as connection:
            # A filter drops some of what the walk finds: a beam twice as wide keeps k for filters that pass half
            # the chunks or more in one walk, and costs less than the second walk a narrower one would need.
            ef = min(WIDEST_EF, max(self.config.ef_search, k) * (1 if filters is None else 2))
            if ef > self.config.ef_search:
                async with connection.transaction():
                    await connection.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                    rows = await connection.fetch(graph, *args)
            else:
                rows = await connection.fetch(graph, *args)
            if len(rows) < k and filters is not None and ef < WIDEST_EF:
                # The filter passed about len(rows) of the ef chunks the walk visited: widen the beam so that k
                # should pass (by half again), at most to pgvector's widest.
                wider = WIDEST_EF if not rows else min(WIDEST_EF, math.ceil(ef * k / len(rows) * 1.5))
                async with connection.transaction():
                    await connection.execute(f"SET LOCAL hnsw.ef_search = {wider}")
                    rows = await connection.fetch(graph, *args)
            if len(rows) < k:
                # Short of k: fewer chunks qualify than k, or the graph walk missed some. Ordering by the column
                # without its dimension keeps the planner off the index: an exact answer.
                exact = f"c.embedding <=> CAST($1::text AS vector({dimension}))"
                rows = await connection.fetch(
                    f"SELECT {COLUMNS}, 1 - ({exact}) AS score FROM lamina_vector_chunks c WHERE {where} "
                    f"ORDER BY {exact}, c.id LIMIT $2",
                    *args,
                )
        return [self._hit(row) for row in rows]

    async def _keyword(self, literal: str, text: str, k: int, filters: Comparison | Compound | None) -> list[Hit]:
        query = _or_query(text)
        if query is None:
            return []
        args: list[Any] = [query, k]
        where = self._where(literal, filters, args)
        # ts_rank_cd normalisation 32 is rank / (rank + 1): a score in [0, 1), as the router expects.
        async with reachable(self.store):
            rows = await self.pool.fetch(
                f"SELECT {COLUMNS}, ts_rank_cd(c.search_text, q, 32) AS score "
                "FROM lamina_vector_chunks c, websearch_to_tsquery('english', $1) q "
                f"WHERE {where} AND c.search_text @@ q ORDER BY score DESC, c.id LIMIT $2",
                *args,
            )
        return [self._hit(row) for row in rows]

    async def _hybrid(
        self,
        literal: str,
        dimension: int,
        vector: list[float],
        text: str,
        k: int,
        filters: Comparison | Compound | None,
    ) -> list[Hit]:
        """Both rankings, `hybrid_depth(k)` deep, and their reciprocal-rank fusion in one statement, as
        `search.fuse` does it: a chunk first in both scores 1.0, a non-match takes no rank, and ties keep the
        order in which fusion met the chunks (the vector ranking first, then the keyword ranking)."""
        words = _or_query(text)
        depth = hybrid_depth(k)
        args: list[Any] = [_vector_text(vector), words or "", depth, k]
        where = self._where(literal, filters, args)
        distance = f"c.embedding::vector({dimension}) <=> CAST($1::text AS vector({dimension}))"
        statement = f"""
            WITH by_vector AS (
                SELECT id, row_number() OVER (ORDER BY d, id) AS rank FROM (
                    SELECT c.id, {distance} AS d FROM lamina_vector_chunks c WHERE {where}
                    ORDER BY {distance} LIMIT $3) v
                WHERE d < 1),
            by_text AS (
                SELECT id, row_number() OVER (ORDER BY s DESC, id) AS rank FROM (
                    SELECT c.id, ts_rank_cd(c.search_text, q, 32) AS s
                    FROM lamina_vector_chunks c, websearch_to_tsquery('english', $2) q
                    WHERE {where} AND c.search_text @@ q ORDER BY s DESC, c.id LIMIT $3) t
                WHERE s > 0),
            fused AS (
                SELECT id, sum(1.0::float8 / ({RRF_K} + rank)) / (2.0::float8 / ({RRF_K} + 1)) AS score,
                    min(arrival) AS arrival
                FROM (SELECT id, rank, rank AS arrival FROM by_vector
                      UNION ALL SELECT id, rank, {depth + 1} + rank FROM by_text) ranks GROUP BY id)
            SELECT {COLUMNS}, f.score FROM fused f JOIN lamina_vector_chunks c ON c.id = f.id
            ORDER BY f.score DESC, f.arrival LIMIT $4"""
        ef = min(max(self.config.ef_search, depth), WIDEST_EF)
        async with reachable(self.store), self.pool.acquire() as connection:
            if ef > self.config.ef_search:
                async with connection.transaction():
                    await connection.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                    rows = await connection.fetch(statement, *args)
            else:
                rows = await connection.fetch(statement, *args)
        return [self._hit(row) for row in rows]

    @staticmethod
    def _hit(row: asyncpg.Record) -> Hit:
        return Hit(
            id=str(row["id"]),
            content=row["content"],
            file_id=row["file_id"],
            metadata=json.loads(row["metadata"]),
            attributes=json.loads(row["attributes"]),
            score=float(row["score"]),
        )
