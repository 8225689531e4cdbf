"""Core's storage backend: one SQLite database (aiosqlite, WAL) holding the key-value store and the job queue.

Several processes may share the database (two `lamina run` over one data directory): SQLite's own locking keeps
each statement atomic, and a job is claimed by a single UPDATE, so no two workers ever hold the same job.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiosqlite
from pydantic import Field

from lamina.hookspecs import hookimpl
from lamina.specs import ProviderConfig, StorageBackendSpec
from lamina.storage import Job, JobQueue, KVStore


async def connect(path: Path, *, autocommit: bool = False) -> aiosqlite.Connection:
    """Open a SQLite database the way every store of Lamina's does (providers' own databases included).

    `autocommit`: every statement is its own transaction, for stores whose writes are single statements; a write
    is then one trip to aiosqlite's thread instead of two (execute, then commit), which is most of its cost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None) if autocommit else await aiosqlite.connect(path)
    # WAL + synchronous=NORMAL: a process crash loses no committed write, and readers never block the writer.
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    # Another process writing the same database makes us wait for its lock instead of failing at once.
    await db.execute("PRAGMA busy_timeout=10000")
    return db


# Coroutines share one connection in autocommit mode: every statement is one atomic write or one
# execute_fetchall read, because a statement left open across an await (a cursor being iterated) would hold a
# transaction open under another coroutine's statements.


class SQLiteKV:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def get(self, key: str) -> Any | None:
        row = next(iter(await self._db.execute_fetchall("SELECT value FROM kv WHERE key = ?", (key,))), None)
        return None if row is None else json.loads(row[0])

    async def set(self, key: str, value: Any) -> None:
        await self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    async def delete(self, key: str) -> bool:
        cursor = await self._db.execute("DELETE FROM kv WHERE key = ?", (key,))
        return cursor.rowcount > 0

    async def values(self, prefix: str) -> list[Any]:
        # Keys are ours (no LIKE wildcards in them), so a range scan on the primary key does the prefix match.
        query = "SELECT value FROM kv WHERE key >= ? AND key < ? ORDER BY key"
        return [json.loads(row[0]) for row in (await self._db.execute_fetchall(query, (prefix, prefix + "\uffff")))]


class SQLiteJobs:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def enqueue(self, kind: str, key: str, payload: dict[str, Any]) -> Job:
        job = Job(id=uuid.uuid4().hex, kind=kind, key=key, payload=payload, attempts=0)
        await self._db.execute(
            "INSERT OR REPLACE INTO jobs (kind, key, id, payload, worker, lease_until, attempts) "
            "VALUES (?, ?, ?, ?, NULL, 0, 0)",
            (kind, key, job.id, json.dumps(payload)),
        )
        return job

    async def ensure(self, kind: str, key: str, payload: dict[str, Any]) -> bool:
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO jobs (kind, key, id, payload, worker, lease_until, attempts) "
            "VALUES (?, ?, ?, ?, NULL, 0, 0)",
            (kind, key, uuid.uuid4().hex, json.dumps(payload)),
        )
        return cursor.rowcount > 0

    async def claim(self, kind: str, worker: str, lease_seconds: float) -> Job | None:
        now = time.time()
        # One statement: SQLite runs it under the database's write lock, so two claimers never get one job.
        rows = await self._db.execute_fetchall(
            "UPDATE jobs SET worker = ?, lease_until = ?, attempts = attempts + 1 "
            "WHERE rowid = (SELECT rowid FROM jobs WHERE kind = ? AND lease_until < ? ORDER BY rowid LIMIT 1) "
            "RETURNING id, key, payload, attempts",
            (worker, now + lease_seconds, kind, now),
        )
        row = next(iter(rows), None)
        if row is None:
            return None
        return Job(id=row[0], kind=kind, key=row[1], payload=json.loads(row[2]), attempts=row[3])

    async def renew(self, job: Job, worker: str, lease_seconds: float) -> bool:
        cursor = await self._db.execute(
            "UPDATE jobs SET lease_until = ? WHERE kind = ? AND key = ? AND id = ? AND worker = ?",
            (time.time() + lease_seconds, job.kind, job.key, job.id, worker),
        )
        return cursor.rowcount > 0

    async def finish(self, job: Job, worker: str) -> bool:
        cursor = await self._db.execute(
            "DELETE FROM jobs WHERE kind = ? AND key = ? AND id = ? AND worker = ?", (job.kind, job.key, job.id, worker)
        )
        return cursor.rowcount > 0

    async def release(self, job: Job, worker: str) -> bool:
        cursor = await self._db.execute(
            "UPDATE jobs SET worker = NULL, lease_until = 0, attempts = max(attempts - 1, 0) "
            "WHERE kind = ? AND key = ? AND id = ? AND worker = ?",
            (job.kind, job.key, job.id, worker),
        )
        return cursor.rowcount > 0

    async def cancel(self, kind: str, key: str) -> bool:
        cursor = await self._db.execute("DELETE FROM jobs WHERE kind = ? AND key = ?", (kind, key))
        return cursor.rowcount > 0

    async def count(self, kind: str) -> int:
        row = next(iter(await self._db.execute_fetchall("SELECT count(*) FROM jobs WHERE kind = ?", (kind,))), None)
        return int(row[0]) if row else 0


class SQLiteStorage:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self.kv: KVStore = SQLiteKV(db)
        self.jobs: JobQueue = SQLiteJobs(db)

    async def close(self) -> None:
        await self._db.close()


class SQLiteStorageConfig(ProviderConfig):
    path: str | None = Field(None, description="the database file; default: kvstore.db in the data directory")


async def open_storage(config: SQLiteStorageConfig, data_dir: Path) -> SQLiteStorage:
    db = await connect(Path(config.path).expanduser() if config.path else data_dir / "kvstore.db", autocommit=True)
    await db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    await db.execute(
        "CREATE TABLE IF NOT EXISTS jobs (kind TEXT NOT NULL, key TEXT NOT NULL, id TEXT NOT NULL, "
        "payload TEXT NOT NULL, worker TEXT, lease_until REAL NOT NULL, attempts INTEGER NOT NULL, "
        "PRIMARY KEY (kind, key))"
    )
    return SQLiteStorage(db)


@hookimpl
def register_storage_backends() -> list[StorageBackendSpec]:
    return [
        StorageBackendSpec(
            type="sqlite",
            config=SQLiteStorageConfig,
            create=open_storage,
            description="one SQLite file (WAL) for registries and jobs; shared safely by processes on one machine",
        )
    ]
