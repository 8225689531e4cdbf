"""Chunks in SQLite (the source of truth), one hnswlib index per store as a rebuildable cache.

Writes go to SQLite first and are committed before the index changes, so after a crash SQLite has everything
and the index file at most lags behind. Index files are written to a temporary name and renamed; the vector
count, byte size and CRC-32 of the file are then recorded in SQLite. At start-up a file that does not match its
record (or fails to load) is rebuilt from the stored embeddings, and a loadable one is reconciled with
SQLite: vectors it lacks are added, vectors SQLite no longer has are marked deleted.
"""

from __future__ import annotations

import asyncio
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
from lamina.apis.vector_io.provider import Hit
from lamina.errors import bad_request
from lamina.storage.sqlite import connect

log = logging.getLogger("lamina.vector_hnswlib")

SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (id TEXT PRIMARY KEY, dimension INTEGER);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    store_id TEXT NOT NULL,
    file_id TEXT,
    content TEXT NOT NULL,
    metadata TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (store_id, file_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(content, tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS index_files (
    store_id TEXT PRIMARY KEY, count INTEGER NOT NULL, bytes INTEGER NOT NULL, crc32 INTEGER NOT NULL
);
"""
WORD = re.compile(r"\w+")
MIN_CAPACITY = 1024


def _crc32(path: Path) -> int:
    checksum = 0
    with open(path, "rb") as file:
        while block := file.read(1 << 22):
            checksum = zlib.crc32(block, checksum)
    return checksum


class StoreIndex:
    """One store's hnswlib index; every use goes through `lock` (hnswlib is not safe under concurrent writes)."""

    def __init__(self, index: hnswlib.Index, dimension: int, live: int) -> None:
        self.index = index
        self.dimension = dimension
        self.live = live  # vectors not marked deleted
        self.lock = asyncio.Lock()
        self.dirty = False


class HnswlibVectorIO:
    def __init__(self, root: Path, db: aiosqlite.Connection, config: Any) -> None:
        self.root = root
        self.indexes_dir = root / "indexes"
        self.db = db
        self.config = config
        self.dimensions: dict[str, int | None] = {}
        self.indexes: dict[str, StoreIndex] = {}
        self.write_lock = asyncio.Lock()  # one writer: chunk ids are allocated here
        self.next_id = 1
        self.saver: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, root: Path, config: Any) -> HnswlibVectorIO:
        (root / "indexes").mkdir(parents=True, exist_ok=True)
        db = await connect(root / "vectors.db")
        await db.executescript(SCHEMA)
        await db.commit()
        provider = cls(root, db, config)
        await provider._load()
        provider.saver = asyncio.create_task(provider._save_periodically())
        return provider

    async def close(self) -> None:
        if self.saver:
            self.saver.cancel()
            await asyncio.gather(self.saver, return_exceptions=True)
        await self.save_all()
        await self.db.close()

    # -- start-up

    async def _load(self) -> None:
        started = time.perf_counter()
        async with self.db.execute("SELECT COALESCE(MAX(id), 0) FROM chunks") as cursor:
            self.next_id = (await cursor.fetchone())[0] + 1
        async with self.db.execute("SELECT id, dimension FROM stores") as cursor:
            self.dimensions = {row[0]: row[1] async for row in cursor}
        for store_id, dimension in self.dimensions.items():
            if dimension is not None:
                self.indexes[store_id] = await self._open_index(store_id, dimension)
        known = {f"{store_id}.bin" for store_id in self.dimensions}
        for leftover in self.indexes_dir.iterdir():  # temp files of an interrupted save, indexes of deleted stores
            if leftover.name not in known:
                leftover.unlink(missing_ok=True)
        log.info("loaded %d vector stores in %.2fs", len(self.dimensions), time.perf_counter() - started)

    def _path(self, store_id: str) -> Path:
        return self.indexes_dir / f"{store_id}.bin"

    async def _open_index(self, store_id: str, dimension: int) -> StoreIndex:
        async with self.db.execute("SELECT id FROM chunks WHERE store_id = ?", (store_id,)) as cursor:
            labels = np.array([row[0] for row in await cursor.fetchall()], dtype=np.int64)
        query = "SELECT count, bytes, crc32 FROM index_files WHERE store_id = ?"
        async with self.db.execute(query, (store_id,)) as cursor:
            recorded = await cursor.fetchone()
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
            capacity = max(MIN_CAPACITY, int(max(recorded[0], len(labels)) * 1.25))
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
            index = self._new_index(dimension, max(MIN_CAPACITY, int(len(labels) * 1.25)))
            present: set[int] = set()
        else:
            present = set(index.get_ids_list())
        wanted = set(labels.tolist())
        missing = np.array(sorted(wanted - present), dtype=np.int64)
        extra = present - wanted
        store = StoreIndex(index, dimension, len(wanted) - len(missing))  # `_add` counts the missing ones
        if len(missing):
            log.info("adding %d vectors of %s that the index file lacks", len(missing), store_id)
            for start in range(0, len(missing), 10000):
                part = missing[start : start + 10000]
                vectors = await self._embeddings(part, dimension)
                await asyncio.to_thread(self._add, store, vectors, part)
            store.dirty = True
        for label in extra:
            try:
                index.mark_deleted(label)
                store.dirty = True
            except RuntimeError:
                pass  # already marked deleted in the saved file
        return store

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
        placeholders = ",".join("?" * len(labels))
        async with self.db.execute(
            f"SELECT id, embedding FROM chunks WHERE id IN ({placeholders})", [int(x) for x in labels]
        ) as cursor:
            rows = dict(await cursor.fetchall())
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
        temporary = path.with_name(path.name + ".tmp")
        async with store.lock:
            count = store.index.element_count
            checksum = await asyncio.to_thread(self._write_file, store.index, temporary, path)
            store.dirty = False
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
        await self.db.execute("INSERT OR IGNORE INTO stores (id, dimension) VALUES (?, NULL)", (store_id,))
        await self.db.commit()
        self.dimensions.setdefault(store_id, None)

    async def delete_store(self, store_id: str) -> None:
        async with self.write_lock:
            await self.db.execute(
                "DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE store_id = ?)", (store_id,)
            )
            await self.db.execute("DELETE FROM chunks WHERE store_id = ?", (store_id,))
            await self.db.execute("DELETE FROM index_files WHERE store_id = ?", (store_id,))
            await self.db.execute("DELETE FROM stores WHERE id = ?", (store_id,))
            await self.db.commit()
            self.dimensions.pop(store_id, None)
            store = self.indexes.pop(store_id, None)
            if store is not None:
                async with store.lock:
                    self._path(store_id).unlink(missing_ok=True)

    def _known(self, store_id: str) -> None:
        if store_id not in self.dimensions:
            raise bad_request(f"vector store '{store_id}' has no index in this provider", param="vector_store_id")

    async def count(self, store_id: str) -> int:
        store = self.indexes.get(store_id)
        return store.live if store else 0

    # -- writes

    async def insert(self, store_id: str, chunks: list[tuple[str, dict[str, Any]]], embeddings: Any) -> list[int]:
        """Store chunks with their embeddings (one row each, same order); returns the new chunk ids."""
        self._known(store_id)
        vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(chunks):
            raise bad_request("need one embedding per chunk", param="chunks")
        if not np.all(np.isfinite(vectors)):
            raise bad_request("embeddings must be finite numbers", param="chunks")
        dimension = vectors.shape[1]
        async with self.write_lock:
            known = self.dimensions.get(store_id)
            if known is not None and known != dimension:
                raise bad_request(
                    f"embeddings have {dimension} dimensions; this vector store holds {known}", param="embedding"
                )
            if known is None:
                await self.db.execute("UPDATE stores SET dimension = ? WHERE id = ?", (dimension, store_id))
                self.dimensions[store_id] = dimension
                self.indexes[store_id] = StoreIndex(self._new_index(dimension, MIN_CAPACITY), dimension, 0)
            ids = list(range(self.next_id, self.next_id + len(chunks)))
            self.next_id += len(chunks)
            await self.db.executemany(
                "INSERT INTO chunks (id, store_id, file_id, content, metadata, embedding) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (i, store_id, meta.get("file_id"), text, json.dumps(meta), vector.tobytes())
                    for i, (text, meta), vector in zip(ids, chunks, vectors, strict=True)
                ],
            )
            await self.db.executemany(
                "INSERT INTO chunks_fts (rowid, content) VALUES (?, ?)",
                [(i, text) for i, (text, _) in zip(ids, chunks, strict=True)],
            )
            await self.db.commit()
            store = self.indexes[store_id]
            async with store.lock:
                await asyncio.to_thread(self._add, store, vectors, np.array(ids, dtype=np.int64))
        return ids

    @staticmethod
    def _add(store: StoreIndex, vectors: np.ndarray, labels: np.ndarray) -> None:
        index = store.index
        needed = index.element_count + len(labels)
        if needed > index.get_max_elements():
            index.resize_index(max(needed, index.get_max_elements() * 2))
        index.add_items(vectors, labels)
        store.live += len(labels)
        store.dirty = True

    async def delete_file_chunks(self, store_id: str, file_id: str) -> None:
        await self._delete("store_id = ? AND file_id = ?", (store_id, file_id), store_id)

    async def delete_chunks(self, store_id: str, chunk_ids: list[int]) -> None:
        placeholders = ",".join("?" * len(chunk_ids))
        await self._delete(f"store_id = ? AND id IN ({placeholders})", (store_id, *chunk_ids), store_id)

    async def _delete(self, where: str, args: tuple[Any, ...], store_id: str) -> None:
        async with self.write_lock:
            async with self.db.execute(f"SELECT id FROM chunks WHERE {where}", args) as cursor:
                labels = [row[0] for row in await cursor.fetchall()]
            if not labels:
                return
            await self.db.execute(f"DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE {where})", args)
            await self.db.execute(f"DELETE FROM chunks WHERE {where}", args)
            await self.db.commit()
            store = self.indexes.get(store_id)
            if store is None:
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
        async with self.db.execute(query, (store_id, file_id)) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    async def knn(self, store_id: str, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Batched nearest neighbours: (labels, cosine similarities), each of shape (len(queries), k')."""
        store = self.indexes.get(store_id)
        matrix = np.asarray(queries, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if store is None or store.live == 0:
            return np.empty((len(matrix), 0), dtype=np.uint64), np.empty((len(matrix), 0), dtype=np.float32)
        if matrix.shape[1] != store.dimension:
            raise bad_request(
                f"query embedding has {matrix.shape[1]} dimensions; this vector store holds {store.dimension}",
                param="embedding",
            )
        k = min(k, store.live)
        async with store.lock:
            return await asyncio.to_thread(self._search, store, matrix, k)

    def _search(self, store: StoreIndex, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = store.index
        index.set_ef(max(self.config.ef_search, k))
        while True:
            try:
                labels, distances = index.knn_query(matrix, k=k)
                return labels, 1.0 - distances
            except RuntimeError:
                # hnswlib could not find k live neighbours (a graph thinned by deletes): ask for fewer.
                if k == 1:
                    return np.empty((len(matrix), 0), dtype=np.uint64), np.empty((len(matrix), 0), dtype=np.float32)
                k = max(1, k // 2)

    async def query_vector(self, store_id: str, embedding: list[float], k: int) -> list[Hit]:
        labels, scores = await self.knn(store_id, embedding, k)
        return await self._hits([int(x) for x in labels[0]], [float(s) for s in scores[0]])

    async def query_keyword(self, store_id: str, text: str, k: int) -> list[Hit]:
        words = WORD.findall(text.lower())
        if not words:
            return []
        match = " OR ".join(f'"{word}"' for word in dict.fromkeys(words))
        query = (
            "SELECT c.id, bm25(chunks_fts) AS rank FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
            "WHERE chunks_fts MATCH ? AND c.store_id = ? ORDER BY rank LIMIT ?"
        )
        async with self.db.execute(query, (match, store_id, k)) as cursor:
            rows = await cursor.fetchall()
        # bm25() is negative, lower is better: map b = -bm25 >= 0 to b / (1 + b) in [0, 1).
        return await self._hits([row[0] for row in rows], [(-r) / (1.0 - r) for _, r in rows])

    async def _hits(self, labels: list[int], scores: list[float]) -> list[Hit]:
        if not labels:
            return []
        placeholders = ",".join("?" * len(labels))
        async with self.db.execute(
            f"SELECT id, content, metadata FROM chunks WHERE id IN ({placeholders})", labels
        ) as cursor:
            rows = {row[0]: row for row in await cursor.fetchall()}
        return [
            Hit(id=label, content=rows[label][1], metadata=json.loads(rows[label][2]), score=score)
            for label, score in zip(labels, scores, strict=True)
            if label in rows  # deleted between the index query and now
        ]
