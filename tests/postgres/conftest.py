"""Real PostgreSQL for the tests: the server at 127.0.0.1:5432 (each user gets a database of its own,
`lamina_test_<random>`, dropped at the end even when the test fails), and for pgvector a PostgreSQL 16 of the
`pgserver` wheel, started in a temporary folder (listening on a Unix socket there, so no port is taken).

Where no PostgreSQL is reachable the tests skip with one line, unless LAMINA_REQUIRE_SERVICES is set (CI), where
they fail instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from postgres_helpers import unavailable

ADMIN_URL = os.environ.get("LAMINA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def with_database(url: str, database: str) -> str:
    """`url` with its database replaced (scheme://user@host:port/db, optionally ?host=/socket/folder)."""
    head, _, tail = url.partition("://")
    authority, _, rest = tail.partition("/")
    query = rest.partition("?")[2]
    return f"{head}://{authority}/{database}" + (f"?{query}" if query else "")


async def _admin_async(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _admin(url: str, statement: str) -> None:
    """Run one statement on a loop of its own, in a thread: callers may be inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, _admin_async(url, statement)).result()


@contextlib.contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new empty database on the server of `admin_url`, dropped afterwards whatever happened."""
    name = f"lamina_test_{secrets.token_hex(6)}"
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_url, name)
    finally:
        _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    try:
        _admin(ADMIN_URL, "SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        unavailable(f"no PostgreSQL at {ADMIN_URL} ({type(exc).__name__}); Postgres tests skipped")
    return ADMIN_URL


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh database for one test."""
    with scratch_database(postgres_admin) as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url(postgres_admin: str) -> Iterator[str]:
    with scratch_database(postgres_admin) as url:
        yield url


@contextlib.contextmanager
def pgserver_instance() -> Iterator[Any]:
    """A PostgreSQL 16 with pgvector from the `pgserver` wheel, in a temporary folder, removed afterwards."""
    try:
        import pgserver
    except ImportError:
        unavailable("the pgserver wheel (PostgreSQL with pgvector) is not installed; pgvector tests skipped")
    # Run as root, pgserver runs PostgreSQL as a user of its own, which cannot enter pytest's private temporary
    # folders; its socket path must also stay under 107 bytes. So: a short folder of its own, removed after.
    folder = Path(tempfile.mkdtemp(prefix="lamina-pgvector-"))
    folder.chmod(0o755)
    server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pgvector_admin() -> Iterator[str]:
    """The pgserver PostgreSQL of this test session."""
    with pgserver_instance() as server:
        yield server.get_uri("postgres")


@pytest.fixture
def restartable_postgres() -> Iterator[Any]:
    """A pgserver PostgreSQL of one test's own, which the test may stop and start again."""
    with pgserver_instance() as server:
        yield server


@pytest.fixture(scope="module")
def pgvector_url(pgvector_admin: str) -> Iterator[str]:
    with scratch_database(pgvector_admin) as url:
        yield url
