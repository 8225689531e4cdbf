"""A small persistent key-value store on SQLite (aiosqlite), for registries and provider metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiosqlite


async def connect(path: Path) -> aiosqlite.Connection:
    """Open a SQLite database the way every store of Lamina's does (providers' own databases included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path)
    # WAL + synchronous=NORMAL: a process crash loses no committed write, and readers never block the writer.
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    return db


class KVStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> KVStore:
        db = await connect(path)
        await db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        await db.commit()
        return cls(db)

    async def get(self, key: str) -> Any | None:
        async with self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else json.loads(row[0])

    async def set(self, key: str, value: Any) -> None:
        await self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, json.dumps(value)))
        await self._db.commit()

    async def delete(self, key: str) -> bool:
        cursor = await self._db.execute("DELETE FROM kv WHERE key = ?", (key,))
        await self._db.commit()
        return cursor.rowcount > 0

    async def values(self, prefix: str) -> list[Any]:
        # Keys are ours (no LIKE wildcards in them), so a range scan on the primary key does the prefix match.
        query = "SELECT value FROM kv WHERE key >= ? AND key < ? ORDER BY key"
        async with self._db.execute(query, (prefix, prefix + "\uffff")) as cursor:
            return [json.loads(row[0]) async for row in cursor]

    async def close(self) -> None:
        await self._db.close()
