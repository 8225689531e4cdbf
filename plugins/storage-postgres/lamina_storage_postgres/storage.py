"""The `postgres` storage backend: core's KVStore and JobQueue in Postgres, with the semantics of core's SQLite
backend (`lamina.storage.sqlite`), so replicas on several machines share registries and background jobs.

Leases are timed by the database server's clock, never a replica's, so replicas whose clocks disagree still
agree on when a lease has expired. A job is claimed with `FOR UPDATE SKIP LOCKED`: concurrent claimers skip the
row another is taking instead of waiting for it, and never get the same job.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
from lamina.storage import Job, dumps

from lamina_storage_postgres.database import Schema, reachable

STORE = "postgres"  # how 503s name this store

SCHEMA = Schema(
    "storage",
    [
        # Keys in the C collation: ordered by code point like SQLite's, and a prefix is a range on the key.
        'CREATE TABLE lamina_kv (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);'
        "CREATE SEQUENCE lamina_jobs_order;"
        "CREATE TABLE lamina_jobs (kind text NOT NULL, key text NOT NULL, id text NOT NULL, payload text NOT NULL, "
        "worker text, lease_until double precision NOT NULL, attempts integer NOT NULL, "
        "queued bigint NOT NULL DEFAULT nextval('lamina_jobs_order'), PRIMARY KEY (kind, key));"
        "CREATE INDEX lamina_jobs_claimable ON lamina_jobs (kind, lease_until, queued);",
    ],
)

NOW = "extract(epoch from clock_timestamp())"


def _changed(status: str) -> bool:
    """Whether a command tag such as `UPDATE 1` / `DELETE 0` / `INSERT 0 1` counts a changed row."""
    return int(status.rsplit(" ", 1)[-1]) > 0


class PostgresKV:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, key: str) -> Any | None:
        async with reachable(STORE):
            value = await self._pool.fetchval("SELECT value FROM lamina_kv WHERE key = $1", key)
        return None if value is None else json.loads(value)

    async def set(self, key: str, value: Any) -> None:
        # JSON text, not jsonb: values come back exactly as stored (key order, numbers), as from SQLite. Dumped
        # before any await: the value is what it was when `set` was called.
        text = dumps(value)
        async with reachable(STORE):
            await self._pool.execute(
                "INSERT INTO lamina_kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2",
                key,
                text,
            )

    async def delete(self, key: str) -> bool:
        async with reachable(STORE):
            return _changed(await self._pool.execute("DELETE FROM lamina_kv WHERE key = $1", key))

    async def values(self, prefix: str) -> list[Any]:
        async with reachable(STORE):
            rows = await self._pool.fetch(
                "SELECT value FROM lamina_kv WHERE key >= $1 AND key < $2 ORDER BY key", prefix, prefix + "\uffff"
            )
        return [json.loads(row[0]) for row in rows]


class PostgresJobs:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def enqueue(self, kind: str, key: str, payload: dict[str, Any]) -> Job:
        job = Job(id=uuid.uuid4().hex, kind=kind, key=key, payload=payload, attempts=0)
        # Replacing a job queues it anew, behind the others (SQLite's INSERT OR REPLACE gives it a new rowid).
        async with reachable(STORE):
            await self._pool.execute(
                "INSERT INTO lamina_jobs (kind, key, id, payload, worker, lease_until, attempts) "
                "VALUES ($1, $2, $3, $4, NULL, 0, 0) ON CONFLICT (kind, key) DO UPDATE SET id = $3, payload = $4, "
                "worker = NULL, lease_until = 0, attempts = 0, queued = nextval('lamina_jobs_order')",
                kind,
                key,
                job.id,
                json.dumps(payload),
            )
        return job

    async def ensure(self, kind: str, key: str, payload: dict[str, Any]) -> bool:
        async with reachable(STORE):
            status = await self._pool.execute(
                "INSERT INTO lamina_jobs (kind, key, id, payload, worker, lease_until, attempts) "
                "VALUES ($1, $2, $3, $4, NULL, 0, 0) ON CONFLICT (kind, key) DO NOTHING",
                kind,
                key,
                uuid.uuid4().hex,
                json.dumps(payload),
            )
        return _changed(status)

    async def claim(self, kind: str, worker: str, lease_seconds: float) -> Job | None:
        async with reachable(STORE):
            row = await self._pool.fetchrow(
                f"UPDATE lamina_jobs SET worker = $2, lease_until = {NOW} + $3, attempts = attempts + 1 "
                "WHERE (kind, key) = (SELECT kind, key FROM lamina_jobs "
                f"WHERE kind = $1 AND lease_until < {NOW} ORDER BY queued LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "RETURNING id, key, payload, attempts",
                kind,
                worker,
                lease_seconds,
            )
        if row is None:
            return None
        return Job(
            id=row["id"], kind=kind, key=row["key"], payload=json.loads(row["payload"]), attempts=row["attempts"]
        )

    async def renew(self, job: Job, worker: str, lease_seconds: float) -> bool:
        async with reachable(STORE):
            status = await self._pool.execute(
                f"UPDATE lamina_jobs SET lease_until = {NOW} + $5 "
                "WHERE kind = $1 AND key = $2 AND id = $3 AND worker = $4",
                job.kind,
                job.key,
                job.id,
                worker,
                lease_seconds,
            )
        return _changed(status)

    async def finish(self, job: Job, worker: str) -> bool:
        async with reachable(STORE):
            status = await self._pool.execute(
                "DELETE FROM lamina_jobs WHERE kind = $1 AND key = $2 AND id = $3 AND worker = $4",
                job.kind,
                job.key,
                job.id,
                worker,
            )
        return _changed(status)

    async def release(self, job: Job, worker: str) -> bool:
        async with reachable(STORE):
            status = await self._pool.execute(
                "UPDATE lamina_jobs SET worker = NULL, lease_until = 0, attempts = greatest(attempts - 1, 0) "
                "WHERE kind = $1 AND key = $2 AND id = $3 AND worker = $4",
                job.kind,
                job.key,
                job.id,
                worker,
            )
        return _changed(status)

    async def cancel(self, kind: str, key: str) -> bool:
        async with reachable(STORE):
            return _changed(await self._pool.execute("DELETE FROM lamina_jobs WHERE kind = $1 AND key = $2", kind, key))

    async def count(self, kind: str) -> int:
        async with reachable(STORE):
            return int(await self._pool.fetchval("SELECT count(*) FROM lamina_jobs WHERE kind = $1", kind))


class PostgresStorage:
    """Registries and jobs in Postgres. `pool` is shared with this package's files provider and with
    lamina-vector-pgvector when their configs name no database of their own."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url  # for components that need connections of their own; holds the password, never shown
        self.kv = PostgresKV(pool)
        self.jobs = PostgresJobs(pool)

    async def close(self) -> None:
        await self.pool.close()
