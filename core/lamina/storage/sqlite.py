"""Core's storage backend: one SQLite database (WAL) holding the key-value store and the job queue, read through
aiosqlite and written mostly on the event loop's own thread (`Database`).

Several processes may share the database (two `lamina run` over one data directory): SQLite's own locking keeps
each statement atomic, and a job is claimed by a single UPDATE, so no two workers ever hold the same job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from pydantic import Field

from lamina.hookspecs import hookimpl
from lamina.specs import ProviderConfig, StorageBackendSpec
from lamina.storage import Job, JobQueue, KVStore, dumps

log = logging.getLogger("lamina")
T = TypeVar("T")


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


# Coroutines share the connections in autocommit mode: every statement is one atomic write or one
# execute_fetchall read, because a statement left open across an await (a cursor being iterated) would hold a
# transaction open under another coroutine's statements.

DIRECT_MAX = 64 * 1024  # characters of values above which a write goes to aiosqlite's thread, not the loop's
CHECKPOINT_EVERY = 500  # direct writes between two checkpoints (about SQLite's default of 1,000 WAL pages)
BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class Database:
    """The store's connections: aiosqlite's for reads and for any write that might wait, and a synchronous one on
    the event loop's thread for small writes.

    A write handed to aiosqlite's thread wakes that thread and costs the loop its core, more than SQLite's own
    work (an INSERT and a WAL commit without fsync, ~0.1 ms). So a small write runs here when it cannot wait:
    `timeout=0` makes another process's write lock fail it at once (SQLITE_BUSY), and it then goes to aiosqlite
    (whose busy timeout waits). Durability is the same either way: each write is committed to the WAL before the
    call returns (synchronous=NORMAL: a process crash loses nothing; a power cut may lose the last commits).

    Order: while any write of this process is queued on aiosqlite's thread, later writes queue behind it, so a
    direct write never overtakes one issued before it. Reads (aiosqlite's connection, autocommit) see every
    committed write, direct ones included. Checkpoints: the direct connection never checkpoints (a large WAL
    copied back on the loop would stall it); every `CHECKPOINT_EVERY` direct writes a passive checkpoint runs on
    aiosqlite's thread instead.
    """

    def __init__(self, db: aiosqlite.Connection, direct: sqlite3.Connection) -> None:
        self.db = db
        self.direct = direct
        self.queued = 0  # writes handed to aiosqlite's thread, not yet done
        self.uncheckpointed = 0
        self.checkpoint: asyncio.Task[Any] | None = None

    def _try_direct(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor | None:
        """The write done on this thread, or None when it must go to aiosqlite (queued writes before it, a big
        value, or the database locked by another connection)."""
        if self.queued or sum(len(p) for p in params if isinstance(p, str)) > DIRECT_MAX:
            return None
        try:
            cursor = self.direct.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in BUSY:
                raise
            return None
        self.uncheckpointed += 1
        if self.uncheckpointed >= CHECKPOINT_EVERY and self.checkpoint is None:
            self.uncheckpointed = 0
            self.checkpoint = asyncio.get_running_loop().create_task(self._checkpoint())
        return cursor

    async def _checkpoint(self) -> None:
        try:
            await self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            log.exception("checkpointing the storage's WAL failed")
        finally:
            self.checkpoint = None

    async def write(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one writing statement; the number of rows it changed."""
        cursor = self._try_direct(sql, params)
        if cursor is not None:
            await asyncio.sleep(0)  # a loop of writes still lets others run between them, as aiosqlite's did
            return cursor.rowcount
        return (await self._queue(self.db.execute(sql, params))).rowcount

    async def write_returning(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Run one writing statement with a RETURNING clause; its rows."""
        cursor = self._try_direct(sql, params)
        if cursor is not None:
            rows = cursor.fetchall()
            await asyncio.sleep(0)
            return rows
        return list(await self._queue(self.db.execute_fetchall(sql, params)))

    async def _queue(self, call: Awaitable[T]) -> T:
        # Counted until aiosqlite's thread has run it, not until the caller stops waiting: a write whose caller
        # was cancelled still runs, and a direct one must not overtake it.
        self.queued += 1
        task = asyncio.ensure_future(call)
        task.add_done_callback(self._dequeued)
        return await asyncio.shield(task)

    def _dequeued(self, task: asyncio.Future[Any]) -> None:
        self.queued -= 1
        if not task.cancelled():
            task.exception()  # seen: whoever still awaits it gets it; nobody else should be told

    async def read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return list(await self.db.execute_fetchall(sql, params))

    async def close(self) -> None:
        if self.checkpoint is not None:
            await asyncio.gather(self.checkpoint, return_exceptions=True)
        self.direct.close()  # first: aiosqlite's, closing last, checkpoints the WAL on its own thread
        await self.db.close()


class SQLiteKV:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> Any | None:
        row = next(iter(await self._db.read("SELECT value FROM kv WHERE key = ?", (key,))), None)
        return None if row is None else json.loads(row[0])

    async def set(self, key: str, value: Any) -> None:
        await self._db.write("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, dumps(value)))

    async def delete(self, key: str) -> bool:
        return await self._db.write("DELETE FROM kv WHERE key = ?", (key,)) > 0

    async def values(self, prefix: str) -> list[Any]:
        # Keys are ours (no LIKE wildcards in them), so a range scan on the primary key does the prefix match.
        query = "SELECT value FROM kv WHERE key >= ? AND key < ? ORDER BY key"
        return [json.loads(row[0]) for row in await self._db.read(query, (prefix, prefix + "\uffff"))]


class SQLiteJobs:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def enqueue(self, kind: str, key: str, payload: dict[str, Any]) -> Job:
        job = Job(id=uuid.uuid4().hex, kind=kind, key=key, payload=payload, attempts=0)
        await self._db.write(
            "INSERT OR REPLACE INTO jobs (kind, key, id, payload, worker, lease_until, attempts) "
            "VALUES (?, ?, ?, ?, NULL, 0, 0)",
            (kind, key, job.id, dumps(payload)),
        )
        return job

    async def ensure(self, kind: str, key: str, payload: dict[str, Any]) -> bool:
        changed = await self._db.write(
            "INSERT OR IGNORE INTO jobs (kind, key, id, payload, worker, lease_until, attempts) "
            "VALUES (?, ?, ?, ?, NULL, 0, 0)",
            (kind, key, uuid.uuid4().hex, dumps(payload)),
        )
        return changed > 0

    async def claim(self, kind: str, worker: str, lease_seconds: float) -> Job | None:
        now = time.time()
        # One statement: SQLite runs it under the database's write lock, so two claimers never get one job.
        rows = await self._db.write_returning(
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
        changed = await self._db.write(
            "UPDATE jobs SET lease_until = ? WHERE kind = ? AND key = ? AND id = ? AND worker = ?",
            (time.time() + lease_seconds, job.kind, job.key, job.id, worker),
        )
        return changed > 0

    async def finish(self, job: Job, worker: str) -> bool:
        changed = await self._db.write(
            "DELETE FROM jobs WHERE kind = ? AND key = ? AND id = ? AND worker = ?", (job.kind, job.key, job.id, worker)
        )
        return changed > 0

    async def release(self, job: Job, worker: str) -> bool:
        changed = await self._db.write(
            "UPDATE jobs SET worker = NULL, lease_until = 0, attempts = max(attempts - 1, 0) "
            "WHERE kind = ? AND key = ? AND id = ? AND worker = ?",
            (job.kind, job.key, job.id, worker),
        )
        return changed > 0

    async def cancel(self, kind: str, key: str) -> bool:
        return await self._db.write("DELETE FROM jobs WHERE kind = ? AND key = ?", (kind, key)) > 0

    async def count(self, kind: str) -> int:
        row = next(iter(await self._db.read("SELECT count(*) FROM jobs WHERE kind = ?", (kind,))), None)
        return int(row[0]) if row else 0


class SQLiteStorage:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.kv: KVStore = SQLiteKV(db)
        self.jobs: JobQueue = SQLiteJobs(db)

    async def close(self) -> None:
        await self.db.close()


class SQLiteStorageConfig(ProviderConfig):
    path: str | None = Field(None, description="the database file; default: kvstore.db in the data directory")


async def open_storage(config: SQLiteStorageConfig, data_dir: Path) -> SQLiteStorage:
    path = Path(config.path).expanduser() if config.path else data_dir / "kvstore.db"
    db = await connect(path, autocommit=True)
    await db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    await db.execute(
        "CREATE TABLE IF NOT EXISTS jobs (kind TEXT NOT NULL, key TEXT NOT NULL, id TEXT NOT NULL, "
        "payload TEXT NOT NULL, worker TEXT, lease_until REAL NOT NULL, attempts INTEGER NOT NULL, "
        "PRIMARY KEY (kind, key))"
    )
    # Used only from the event loop's thread (the one opening it), never waiting for a lock: see `Database`.
    direct = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    direct.execute("PRAGMA synchronous=NORMAL")
    direct.execute("PRAGMA wal_autocheckpoint=0")
    return SQLiteStorage(Database(db, direct))


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
