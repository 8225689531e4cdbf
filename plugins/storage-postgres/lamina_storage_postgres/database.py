"""What every Lamina component keeping state in Postgres shares: the connection pool, the mapping of an outage
to a 503 naming the store, and versioned schema migrations that several replicas starting at once apply once.

Schemas are declared per component (`Schema`) in the entry-point group `lamina.postgres_schemas`, so that
`lamina db upgrade` finds every installed component's migrations without knowing the packages by name.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points

import asyncpg
from lamina.errors import StorageUnavailable

log = logging.getLogger("lamina.postgres")

# Every Lamina migration, of any component, runs under this one session-level advisory lock: replicas starting at
# once wait for each other, and the first one to get the lock does the work the others then find done.
MIGRATION_LOCK = 0x6C616D696E61  # "lamina"
SCHEMA_TABLE = "lamina_schema"

# Errors that mean "Postgres is not there right now" rather than "this statement is wrong".
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, no route (ConnectionError and friends)
    TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 admin shutdown, 57P03 cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # 53300 too many connections, out of disk
    asyncpg.exceptions.ConnectionDoesNotExistError,  # the connection was closed under us mid-statement
)


@dataclass(frozen=True)
class Schema:
    """A component's tables: `migrations[i]` takes its schema from version i to i + 1. Append, never edit."""

    component: str
    migrations: Sequence[str]

    @property
    def latest(self) -> int:
        return len(self.migrations)


def installed_schemas() -> list[Schema]:
    """Every installed component's schema, from the entry-point group `lamina.postgres_schemas`."""
    schemas = []
    for entry in sorted(entry_points(group="lamina.postgres_schemas"), key=lambda e: e.name):
        schema = entry.load()
        if not isinstance(schema, Schema):
            raise TypeError(f"entry point {entry.value} is not a lamina_storage_postgres.Schema")
        schemas.append(schema)
    return schemas


def describe(exc: BaseException) -> str:
    """A short reason for an outage; asyncpg never puts the password of the URL in its messages."""
    text = str(exc).strip() or "connection lost"
    return f"{type(exc).__name__}: {text}"[:300]


@contextlib.asynccontextmanager
async def reachable(store: str) -> AsyncIterator[None]:
    """Turn Postgres being unreachable into a 503 naming `store`; other database errors propagate unchanged."""
    try:
        yield
    except UNREACHABLE as exc:
        raise StorageUnavailable(store, describe(exc)) from exc
    except asyncpg.InterfaceError as exc:
        if "closed" not in str(exc):  # "connection is closed": lost before the statement was sent
            raise
        raise StorageUnavailable(store, describe(exc)) from exc


async def create_pool(
    url: str, *, store: str, min_size: int, max_size: int, timeout: float, settings: dict[str, str] | None = None
) -> asyncpg.Pool:
    """A pool that heals itself: asyncpg replaces a connection found closed when it is next acquired, so once
    Postgres is back, requests succeed again without a restart."""
    async with reachable(store):
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            # Idle connections are retired after a minute, so a long outage leaves few dead ones behind.
            max_inactive_connection_lifetime=60,
            # Session defaults: they survive the RESET ALL the pool runs when a connection is given back.
            server_settings={"application_name": "lamina", **(settings or {})},
        )
    assert pool is not None
    return pool


async def schema_versions(connection: asyncpg.Connection) -> dict[str, int]:
    exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", SCHEMA_TABLE)
    if not exists:
        return {}
    rows = await connection.fetch(f"SELECT component, version FROM {SCHEMA_TABLE}")
    return {row["component"]: row["version"] for row in rows}


async def migrate(connection: asyncpg.Connection, schema: Schema) -> list[int]:
    """Bring `schema` to its latest version, each step in its own transaction; returns the versions applied.
    Replicas doing this at once take turns on the advisory lock, so each step runs exactly once."""
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (component text PRIMARY KEY, version integer NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = (await schema_versions(connection)).get(schema.component, 0)
        if current > schema.latest:
            raise RuntimeError(
                f"the database's {schema.component} schema is at version {current}, newer than this package knows "
                f"({schema.latest}): upgrade the package rather than run an older one against it"
            )
        applied = []
        for version in range(current + 1, schema.latest + 1):
            async with connection.transaction():
                await connection.execute(schema.migrations[version - 1])
                await connection.execute(
                    f"INSERT INTO {SCHEMA_TABLE} (component, version) VALUES ($1, $2) "
                    "ON CONFLICT (component) DO UPDATE SET version = $2, applied_at = now()",
                    schema.component,
                    version,
                )
            applied.append(version)
            log.info("postgres: %s schema migrated to version %d", schema.component, version)
        return applied
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def prepare(pool: asyncpg.Pool, schema: Schema, *, auto_migrate: bool, store: str) -> None:
    """Migrate at start-up, or (for operators who migrate out of band) check the schema is current."""
    async with reachable(store), pool.acquire() as connection:
        if auto_migrate:
            await migrate(connection, schema)
            return
        current = (await schema_versions(connection)).get(schema.component, 0)
    if current != schema.latest:
        raise RuntimeError(
            f"the database's {schema.component} schema is at version {current}, this package needs "
            f"{schema.latest}: run `lamina db upgrade` (or set migrate: true)"
        )
