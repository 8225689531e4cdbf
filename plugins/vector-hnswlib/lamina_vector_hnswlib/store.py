"""Chunks in SQLite (the source of truth), one hnswlib index per store as a rebuildable cache.

Writes go to SQLite first and are committed before the index changes, so after a crash SQLite has everything
and the index file at most lags behind. Index files are written to a temporary name and renamed; the vector
count, byte size and CRC-32 of the file are then recorded in SQLite. At start-up a file that does not match its
record (or fails to load) is rebuilt from the stored embeddings, and a loadable one is reconciled with
SQLite: vectors it lacks are added, vectors SQLite no longer has are marked deleted.

Several processes may share the database (two `lamina run` over one data directory): chunk ids come from a
counter row updated in the writing transaction, each write bumps its store's `version`, and a process whose
index is behind that version reconciles it with SQLite before it answers a query.

Filters run in SQL over each chunk's attributes (a JSON object), the same semantics as the router's
`search.matches`: a vector search asks hnswlib only for chunks whose id passed, or, when few pass, compares the
query with exactly those embeddings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
import zlib
from pathlib import Path
from typing import Any

import aiosqlite
import hnswlib
import numpy as np
from lamina.apis.vector_io.provider import Chunk, Hit
from lamina.apis.vector_io.search import fuse, hybrid_depth
from lamina.apis.vector_io.types import Comparison, Compound
from lamina.errors import bad_request
from lamina.storage.sqlite import connect

log = logging.getLogger("lamina.vector_hnswlib")

SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (id TEXT PRIMARY KEY, dimension INTEGER, version INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    store_id TEXT NOT NULL,
    file_id TEXT,
    content TEXT NOT NULL,
    metadata TEXT NOT NULL,
    embedding BLOB NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (store_id, file_id);
CREATE INDEX IF NOT EXISTS chunks_by_attributes ON chunks (store_id, attributes);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(content, tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS index_files (
    store_id TEXT PRIMARY KEY, count INTEGER NOT NULL, bytes INTEGER NOT NULL, crc32 INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
WORD = re.compile(r"\w+")
MIN_CAPACITY = 1024
EXACT_MAX = 4096  # a filter passing at most this many chunks: compare with their embeddings, no graph search
NUMBER_TYPES = "('integer', 'real')"


def _crc32(path: Path) -> int:
    checksum = 0
    with open(path, "rb") as file:
        while block := file.read(1 << 22):
            checksum = zlib.crc32(block, checksum)
    return checksum


def _equal(value: Any) -> str:
    """SQL over json_each's (type, value) of one attribute, equal to a `?` bound to `value` as Python's == is."""
    if isinstance(value, str):
        return "(type = 'text' AND value = ?)"
    return "(type IN ('integer', 'real', 'true', 'false') AND value = ?)"  # True == 1, as in Python


def filter_sql(condition: Comparison | Compound, args: list[Any], column: str = "c.attributes") -> str:
    """An SQL condition on `column` (a JSON object) true exactly where `search.matches(condition, attributes)` is."""
    if isinstance(condition, Compound):
        parts = [filter_sql(sub, args, column) for sub in condition.filters]
        return "(" + (" AND " if condition.type == "and" else " OR ").join(parts) + ")"
    kind, wanted = condition.type, condition.value
    if kind in ("eq", "ne"):
        test = _equal(wanted)
    elif kind in ("in", "nin"):
        tests = [_equal(value) for value in wanted]  # type: ignore[union-attr]
        test = "(" + " OR ".join(tests) + ")" if tests else "0"
    elif isinstance(wanted, (bool, list)):
        return "0"  # an order on booleans (or lists) matches nothing
    else:
        operator = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[kind]
        types = "= 'text'" if isinstance(wanted, str) else f"IN {NUMBER_TYPES}"
        test = f"(type {types} AND value {operator} ?)"
    args.append(condition.key)
    args.extend(wanted if isinstance(wanted, list) else [wanted])
    exists = f"EXISTS (SELECT 1 FROM json_each({column}) WHERE key = ? AND {test})"
    return f"NOT {exists}" if kind in ("ne", "nin") else exists


class StoreIndex:
    """One store's hnswlib index; every use goes through `lock` (hnswlib is not safe under concurrent writes)."""

    def __init__(self, index: hnswlib.Index, dimension: int) -> None:
        self.index = index
        self.dimension = dimension
        self.live = 0  # vectors not marked deleted
        self.version = -1  # the store's version in SQLite that the index reflects
        self.lock = asyncio.Lock()
        self.dirty = False


class HnswlibVectorIO:
    def __init__(self, root: Path, db: aiosqlite.Connection, config: Any) -> None:
        self.root = root
        self.indexes_dir = root / "indexes"
        self.db = db
        self.config = config
        self.capabilities = frozenset(config.capabilities)
        self.indexes: dict[str, StoreIndex] = {}
        # Every write (and its commit) of this process goes through here: they share one connection, so a
        # commit from one coroutine must never land inside another's transaction.
        self.write_lock = asyncio.Lock()
        self.saver: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, root: Path, config: Any) -> HnswlibVectorIO:
        (root / "indexes").mkdir(parents=True, exist_ok=True)
        db = await connect(root / "vectors.db")
        await db.execute("BEGIN IMMEDIATE")  # two processes starting at once migrate one after the other
        for statement in SCHEMA.split(";"):
            if statement.strip():
                await db.execute(statement)
        await cls._migrate(db)
        await db.commit()
        provider = cls(root, db, config)
        await provider._load()
        provider.saver = asyncio.create_task(provider._save_periodically())
        return provider

    @staticmethod
    async def _migrate(db: aiosqlite.Connection) -> None:
        """Databases of the previous version: no attributes, no store versions, ids allocated in memory."""
        columns = {row[0] for row in await db.execute_fetchall("SELECT name FROM pragma_table_info('chunks')")}
        if "attributes" not in columns:
            await db.execute("ALTER TABLE chunks ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}'")
            # Raw chunks' metadata were their attributes; files' attributes come from the router at start.
            await db.execute("UPDATE chunks SET attributes = metadata WHERE file_id IS NULL")
        columns = {row[0] for row in await db.execute_fetchall("SELECT name FROM pragma_table_info('stores')")}
        if "version" not in columns:
            await db.execute("ALTER TABLE stores ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
        await db.execute(
            "INSERT OR IGNORE INTO counters (name, value) SELECT 'next_chunk_id', COALESCE(MAX(id), 0) + 1 FROM chunks"
        )

    async def close(self) -> None:
        if self.saver:
            self.saver.cancel()
            await asyncio.gather(self.saver, return_exceptions=True)
        await self.save_all()
        await self.db.close()

    # -- start-up and catching up with other processes

    async def _load(self) -> None:
        started = time.perf_counter()
        store_ids = [
            row[0] for row in await self.db.execute_fetchall("SELECT id FROM stores WHERE dimension IS NOT NULL")
        ]
        for store_id in store_ids:
            await self._sync(store_id)
        known = {f"{store_id}.bin" for store_id in store_ids}
        for leftover in self.indexes_dir.iterdir():  # temp files of an interrupted save, indexes of deleted stores
            recent = leftover.name.endswith(".tmp") and time.time() - leftover.stat().st_mtime < 600
            if leftover.name not in known and not recent:  # (a recent temp file may be another process's save)
                leftover.unlink(missing_ok=True)
        log.info("loaded %d vector stores in %.2fs", len(store_ids), time.perf_counter() - started)

    async def _sync(self, store_id: str) -> StoreIndex | None:
        """The store's index, caught up with SQLite if another process (or a crash) left it behind."""
        row = next(
            iter(await self.db.execute_fetchall("SELECT dimension, version FROM stores WHERE id = ?", (store_id,))),
            None,
        )
        if row is None or row[0] is None:
            self.indexes.pop(store_id, None)  # deleted, or still empty, maybe by another process
            return None
        dimension, version = row
        store = self.indexes.get(store_id)
        if store is not None and store.version == version:
            return store
        if store is None:
            store = self.indexes[store_id] = await self._open_index(store_id, dimension)
        async with store.lock:
            if store.version != version:
                await self._reconcile(store_id, store, version)
        return store

    def _path(self, store_id: str) -> Path:
        return self.indexes_dir / f"{store_id}.bin"

    async def _open_index(self, store_id: str, dimension: int) -> StoreIndex:
        query = "SELECT count, bytes, crc32 FROM index_files WHERE store_id = ?"
        recorded = next(iter(await self.db.execute_fetchall(query, (store_id,))), None)
        (stored,) = next(
            iter(await self.db.execute_fetchall("SELECT count(*) FROM chunks WHERE store_id = ?", (store_id,))), None
        )  # type: ignore[misc]
        path = self._path(store_id)
        index = None
        # hnswlib trusts the sizes written in the file, so a damaged file must be caught before it is loaded.
        intact = (
            recorded is not None
            and path.exists()
            and path.stat().st_size == recorded[1]
            and await asyncio.to_thread(_crc32, path) == recorded[2]
        )
        if intact:
            capacity = max(MIN_CAPACITY, int(max(recorded[0], stored) * 1.25))
            try:
                index = await asyncio.to_thread(self._load_file, path, dimension, capacity)
            except (RuntimeError, ValueError, MemoryError, OSError) as exc:
                log.warning("index of %s is unreadable (%s); rebuilding it from SQLite", store_id, exc)
                index = None
            if index is not None and index.element_count != recorded[0]:
                log.warning(
                    "index of %s holds %d vectors, %d recorded; rebuilding", store_id, index.element_count, recorded[0]
                )
                index = None
        elif path.exists() or recorded is not None:
            log.warning("index file of %s is missing or does not match its record; rebuilding it", store_id)
            path.unlink(missing_ok=True)
        if index is None:
            index = self._new_index(dimension, max(MIN_CAPACITY, int(stored * 1.25)))
        return StoreIndex(index, dimension)

    async def _reconcile(self, store_id: str, store: StoreIndex, version: int) -> None:
        """Add the vectors SQLite has and the index lacks, mark deleted those SQLite no longer has. Holds
        `store.lock`; `version` was read before the chunk ids, so a write after it triggers another pass."""
        wanted = {
            row[0] for row in (await self.db.execute_fetchall("SELECT id FROM chunks WHERE store_id = ?", (store_id,)))
        }
        present = set(store.index.get_ids_list())
        missing = np.array(sorted(wanted - present), dtype=np.int64)
        if len(missing):
            log.info("adding %d vectors of %s that the index lacks", len(missing), store_id)
            for start in range(0, len(missing), 10000):
                part = missing[start : start + 10000]
                vectors = await self._embeddings(part, store.dimension)
                await asyncio.to_thread(self._add, store, vectors, part)
        for label in present - wanted:
            try:
                store.index.mark_deleted(label)
                store.dirty = True
            except RuntimeError:
                pass  # already marked deleted
        store.live = len(wanted)
        store.version = version

    def _load_file(self, path: Path, dimension: int, capacity: int) -> hnswlib.Index:
        index = hnswlib.Index(space="cosine", dim=dimension)
        index.load_index(str(path), max_elements=capacity)
        index.set_ef(self.config.ef_search)
        index.set_num_threads(self._threads())
        return index

    def _new_index(self, dimension: int, capacity: int) -> hnswlib.Index:
        index = hnswlib.Index(space="cosine", dim=dimension)
        index.init_index(max_elements=capacity, M=self.config.M, ef_construction=self.config.ef_construction)
        index.set_ef(self.config.ef_search)
        index.set_num_threads(self._threads())
        return index

    def _threads(self) -> int:
        return self.config.threads if self.config.threads > 0 else (os.cpu_count() or 1)

    async def _embeddings(self, labels: np.ndarray, dimension: int) -> np.ndarray:
        rows: dict[int, bytes] = {}
        for start in range(0, len(labels), 30000):  # SQLite's limit on bound parameters
            part = [int(x) for x in labels[start : start + 30000]]
            placeholders = ",".join("?" * len(part))
            rows.update(
                await self.db.execute_fetchall(f"SELECT id, embedding FROM chunks WHERE id IN ({placeholders})", part)
            )  # type: ignore[arg-type]
        return np.stack([np.frombuffer(rows[int(label)], dtype=np.float32) for label in labels]).reshape(-1, dimension)

    # -- persistence of index files

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.save_interval_seconds)
            try:
                await self.save_all()
            except Exception:
                log.exception("saving vector indexes failed")

    async def save_all(self) -> None:
        for store_id, store in list(self.indexes.items()):
            if store.dirty:
                await self.save(store_id)

    async def save(self, store_id: str) -> None:
        store = self.indexes.get(store_id)
        if store is None:
            return
        path = self._path(store_id)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # processes sharing the folder save apart
        async with store.lock:
            count = store.index.element_count
            checksum = await asyncio.to_thread(self._write_file, store.index, temporary, path)
            store.dirty = False
        async with self.write_lock:
            await self.db.execute(
                "INSERT OR REPLACE INTO index_files (store_id, count, bytes, crc32) VALUES (?, ?, ?, ?)",
                (store_id, count, path.stat().st_size, checksum),
            )
            await self.db.commit()

    @staticmethod
    def _write_file(index: hnswlib.Index, temporary: Path, path: Path) -> int:
        index.save_index(str(temporary))
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        checksum = _crc32(temporary)
        os.replace(temporary, path)
        return checksum

    # -- stores

    async def create_store(self, store_id: str) -> None:
        async with self.write_lock:
            await self.db.execute("INSERT OR IGNORE INTO stores (id, dimension) VALUES (?, NULL)", (store_id,))
            await self.db.commit()

    async def delete_store(self, store_id: str) -> None:
        async with self.write_lock:
            await self.db.execute(
                "DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE store_id = ?)", (store_id,)
            )
            await self.db.execute("DELETE FROM chunks WHERE store_id = ?", (store_id,))
            await self.db.execute("DELETE FROM index_files WHERE store_id = ?", (store_id,))
            await self.db.execute("DELETE FROM stores WHERE id = ?", (store_id,))
            await self.db.commit()
            store = self.indexes.pop(store_id, None)
            if store is not None:
                async with store.lock:
                    self._path(store_id).unlink(missing_ok=True)

    async def count(self, store_id: str) -> int:
        store = await self._sync(store_id)
        return store.live if store else 0

    # -- writes

    async def _bump(self, store_id: str) -> None:
        """Count a write of the store (in the open transaction); the local index follows it when it was current."""
        row = next(
            iter(
                await self.db.execute_fetchall(
                    "UPDATE stores SET version = version + 1 WHERE id = ? RETURNING version", (store_id,)
                )
            ),
            None,
        )
        store = self.indexes.get(store_id)
        if row is not None and store is not None and store.version == row[0] - 1:
            store.version = row[0]

    async def insert(self, store_id: str, chunks: list[Chunk], embeddings: Any) -> list[str]:
        """Store chunks with their embeddings (one row each, same order); returns the new chunk ids."""
        vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(chunks):
            raise bad_request("need one embedding per chunk", param="chunks")
        if not np.all(np.isfinite(vectors)):
            raise bad_request("embeddings must be finite numbers", param="chunks")
        dimension = vectors.shape[1]
        async with self.write_lock:
            store = await self._sync(store_id)  # before the transaction: it may read for a while
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                row = next(
                    iter(await self.db.execute_fetchall("SELECT dimension FROM stores WHERE id = ?", (store_id,))), None
                )
                if row is None:
                    raise bad_request(
                        f"vector store '{store_id}' has no index in this provider", param="vector_store_id"
                    )
                if row[0] is not None and row[0] != dimension:
                    raise bad_request(
                        f"embeddings have {dimension} dimensions; this vector store holds {row[0]}", param="embedding"
                    )
                if row[0] is None:
                    await self.db.execute("UPDATE stores SET dimension = ? WHERE id = ?", (dimension, store_id))
                (end,) = next(
                    iter(
                        await self.db.execute_fetchall(
                            "UPDATE counters SET value = value + ? WHERE name = 'next_chunk_id' RETURNING value",
                            (len(chunks),),
                        )
                    ),
                    None,
                )  # type: ignore[misc]
                ids = list(range(end - len(chunks), end))
                await self.db.executemany(
                    "INSERT INTO chunks (id, store_id, file_id, content, metadata, embedding, attributes) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            i,
                            store_id,
                            chunk.file_id,
                            chunk.content,
                            json.dumps(chunk.metadata),
                            vector.tobytes(),
                            json.dumps(chunk.attributes),
                        )
                        for i, chunk, vector in zip(ids, chunks, vectors, strict=True)
                    ],
                )
                await self.db.executemany(
                    "INSERT INTO chunks_fts (rowid, content) VALUES (?, ?)",
                    [(i, chunk.content) for i, chunk in zip(ids, chunks, strict=True)],
                )
                if store is None:
                    store = self.indexes[store_id] = StoreIndex(self._new_index(dimension, MIN_CAPACITY), dimension)
                    store.version = 0  # the version of a store without vectors
                await self._bump(store_id)
                await self.db.commit()
            except BaseException:
                await self.db.rollback()
                raise
            async with store.lock:
                await asyncio.to_thread(self._add, store, vectors, np.array(ids, dtype=np.int64))
        return [str(i) for i in ids]

    @staticmethod
    def _add(store: StoreIndex, vectors: np.ndarray, labels: np.ndarray) -> None:
        index = store.index
        needed = index.element_count + len(labels)
        if needed > index.get_max_elements():
            index.resize_index(max(needed, index.get_max_elements() * 2))
        index.add_items(vectors, labels)
        store.live += len(labels)
        store.dirty = True

    async def update_attributes(self, store_id: str, file_id: str, attributes: dict[str, Any]) -> None:
        async with self.write_lock:
            await self.db.execute(
                "UPDATE chunks SET attributes = ? WHERE store_id = ? AND file_id = ?",
                (json.dumps(attributes), store_id, file_id),
            )
            await self.db.commit()

    async def delete_file_chunks(self, store_id: str, file_id: str) -> None:
        await self._delete("store_id = ? AND file_id = ?", (store_id, file_id), store_id)

    async def delete_chunks(self, store_id: str, chunk_ids: list[int]) -> None:
        placeholders = ",".join("?" * len(chunk_ids))
        await self._delete(f"store_id = ? AND id IN ({placeholders})", (store_id, *chunk_ids), store_id)

    async def _delete(self, where: str, args: tuple[Any, ...], store_id: str) -> None:
        async with self.write_lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                labels = [
                    row[0] for row in (await self.db.execute_fetchall(f"SELECT id FROM chunks WHERE {where}", args))
                ]
                if labels:
                    await self.db.execute(
                        f"DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE {where})", args
                    )
                    await self.db.execute(f"DELETE FROM chunks WHERE {where}", args)
                    await self._bump(store_id)
                await self.db.commit()
            except BaseException:
                await self.db.rollback()
                raise
            store = self.indexes.get(store_id)
            if store is None or not labels:
                return
            async with store.lock:
                for label in labels:
                    try:
                        store.index.mark_deleted(label)
                        store.live -= 1
                    except RuntimeError:
                        pass  # never made it into the index
                store.dirty = True

    # -- reads

    async def file_chunks(self, store_id: str, file_id: str) -> list[str]:
        query = "SELECT content FROM chunks WHERE store_id = ? AND file_id = ? ORDER BY id"
        return [row[0] for row in (await self.db.execute_fetchall(query, (store_id, file_id)))]

    async def knn(
        self, store_id: str, queries: Any, k: int, allowed: set[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched nearest neighbours: (labels, cosine similarities), each of shape (len(queries), k').
        `allowed`: only these chunk ids qualify."""
        store = await self._sync(store_id)
        matrix = np.asarray(queries, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        empty = np.empty((len(matrix), 0), dtype=np.uint64), np.empty((len(matrix), 0), dtype=np.float32)
        if store is None or store.live == 0 or (allowed is not None and not allowed):
            return empty
        if matrix.shape[1] != store.dimension:
            raise bad_request(
                f"query embedding has {matrix.shape[1]} dimensions; this vector store holds {store.dimension}",
                param="embedding",
            )
        if allowed is not None and len(allowed) <= EXACT_MAX:
            return await self._exact(matrix, sorted(allowed), min(k, len(allowed)), store.dimension)
        k = min(k, store.live if allowed is None else len(allowed))
        async with store.lock:
            return await asyncio.to_thread(self._search, store, matrix, k, allowed)

    async def _exact(
        self, matrix: np.ndarray, labels: list[int], k: int, dimension: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine against exactly these chunks: what a selective filter leaves is cheaper to scan than to find
        in the graph, and the answer is exact."""
        vectors = await self._embeddings(np.array(labels, dtype=np.int64), dimension)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        queries = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        similarities = queries @ vectors.T
        order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
        return np.array(labels, dtype=np.uint64)[order], np.take_along_axis(similarities, order, axis=1)

    def _search(
        self, store: StoreIndex, matrix: np.ndarray, k: int, allowed: set[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        index = store.index
        if allowed is not None and len(allowed) >= store.live // 20:
            # A filter most chunks pass is cheaper applied to a few more neighbours than inside the graph walk
            # (which calls back into Python for every node it visits).
            wider = min(store.live, 2 * k * store.live // len(allowed))
            index.set_ef(max(self.config.ef_search, wider))
            with contextlib.suppress(RuntimeError):
                labels, distances = index.knn_query(matrix, k=wider)
                keep = np.vectorize(allowed.__contains__, otypes=[bool])(labels.astype(np.int64))
                if keep.sum(axis=1).min() >= k:
                    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
                    picked = np.take_along_axis(labels, order, axis=1)
                    return picked, 1.0 - np.take_along_axis(distances, order, axis=1)
        index.set_ef(max(self.config.ef_search, k))
        passes = None if allowed is None else allowed.__contains__
        while True:
            try:
                labels, distances = index.knn_query(matrix, k=k, filter=passes)
                return labels, 1.0 - distances
            except RuntimeError:
                # hnswlib could not find k live neighbours (a graph thinned by deletes): ask for fewer.
                if k == 1:
                    return np.empty((len(matrix), 0), dtype=np.uint64), np.empty((len(matrix), 0), dtype=np.float32)
                k = max(1, k // 2)

    async def _allowed(self, store_id: str, filters: Comparison | Compound) -> set[int]:
        # Chunks of one file share their attributes: test each distinct attribute set once, then fetch the ids
        # of the sets that pass through the (store_id, attributes) index.
        args: list[Any] = [store_id]
        condition = filter_sql(filters, args, "sets.attributes")
        query = (
            "SELECT id FROM chunks WHERE store_id = ? AND attributes IN (SELECT attributes FROM "
            f"(SELECT DISTINCT attributes FROM chunks WHERE store_id = ?) AS sets WHERE {condition})"
        )
        return {row[0] for row in await self.db.execute_fetchall(query, [store_id, *args])}

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
        if mode == "hybrid":
            depth = hybrid_depth(k)
            rankings = [
                await self.query(store_id, vector=vector, text=None, k=depth, filters=filters, mode="vector"),
                await self.query(store_id, vector=None, text=text, k=depth, filters=filters, mode="keyword"),
            ]
            return fuse(rankings)[:k]
        if mode == "keyword":
            return await self._keyword(store_id, text or "", k, filters)
        if vector is None:
            raise bad_request("a vector search needs a query vector", param="query")
        allowed = None if filters is None else await self._allowed(store_id, filters)
        labels, scores = await self.knn(store_id, vector, k, allowed)
        return await self._hits([int(x) for x in labels[0]], [float(s) for s in scores[0]])

    async def _keyword(self, store_id: str, text: str, k: int, filters: Comparison | Compound | None) -> list[Hit]:
        words = WORD.findall(text.lower())
        if not words:
            return []
        match = " OR ".join(f'"{word}"' for word in dict.fromkeys(words))
        args: list[Any] = [match, store_id]
        condition = "" if filters is None else " AND " + filter_sql(filters, args)
        args.append(k)
        query = (
            "SELECT c.id, bm25(chunks_fts) AS rank FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
            f"WHERE chunks_fts MATCH ? AND c.store_id = ?{condition} ORDER BY rank LIMIT ?"
        )
        rows = await self.db.execute_fetchall(query, args)
        # bm25() is negative, lower is better: map b = -bm25 >= 0 to b / (1 + b) in [0, 1).
        return await self._hits([row[0] for row in rows], [(-r) / (1.0 - r) for _, r in rows])

    async def _hits(self, labels: list[int], scores: list[float]) -> list[Hit]:
        if not labels:
            return []
        placeholders = ",".join("?" * len(labels))
        rows = {
            row[0]: row
            for row in (
                await self.db.execute_fetchall(
                    f"SELECT id, content, file_id, metadata, attributes FROM chunks WHERE id IN ({placeholders})",
                    labels,
                )
            )
        }
        return [
            Hit(
                id=str(label),
                content=rows[label][1],
                file_id=rows[label][2],
                metadata=json.loads(rows[label][3]),
                attributes=json.loads(rows[label][4]),
                score=score,
            )
            for label, score in zip(labels, scores, strict=True)
            if label in rows  # deleted between the index query and now
        ]
