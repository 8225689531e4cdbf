"""Postgres for Lamina: the `postgres` storage backend (registries and jobs), the `remote::postgres` files
provider (files' bytes), and `lamina db status` / `lamina db upgrade` for schema migrations.

Entry-point module: imports only pydantic, click and lamina; asyncpg is imported when something starts.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click
import lamina
from pydantic import Field, SecretStr


class PostgresStorageConfig(lamina.ProviderConfig):
    url: SecretStr = Field(description="postgresql://user:password@host:5432/database (masked when shown)")
    min_connections: int = Field(1, ge=0, description="connections the pool keeps open")
    max_connections: int = Field(10, ge=1, description="connections the pool opens at most, shared by this process")
    connect_timeout_seconds: float = Field(5.0, gt=0, description="beyond this a request gets a 503")
    migrate: bool = Field(True, description="apply schema migrations at start-up; false: `lamina db upgrade` does")


class PostgresFilesConfig(lamina.ProviderConfig):
    url: SecretStr | None = Field(
        None, description="a database of its own; default: the stack's storage (which must be `postgres`)"
    )
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1, description="uploads larger than this get a 413")
    max_connections: int = Field(5, ge=1, description="with a url of its own: the size of its pool")
    migrate: bool = Field(True, description="apply schema migrations at start-up")


async def open_storage(config: PostgresStorageConfig, data_dir: Path) -> Any:
    from lamina_storage_postgres.database import create_pool, prepare
    from lamina_storage_postgres.storage import SCHEMA, STORE, PostgresStorage

    pool = await create_pool(
        config.url.get_secret_value(),
        store=STORE,
        min_size=min(config.min_connections, config.max_connections),
        max_size=config.max_connections,
        timeout=config.connect_timeout_seconds,
    )
    try:
        await prepare(pool, SCHEMA, auto_migrate=config.migrate, store=STORE)
    except BaseException:
        await pool.close()
        raise
    return PostgresStorage(pool, config.url.get_secret_value())


def database_url(url: SecretStr | None, deps: lamina.Deps) -> str | None:
    """The database a provider keeps its state in: its config's `url`, else the stack storage's when that is
    `postgres`, else None."""
    from lamina_storage_postgres.storage import PostgresStorage

    if url is not None:
        return url.get_secret_value()
    return deps.storage.url if isinstance(deps.storage, PostgresStorage) else None


async def shared_pool(url: SecretStr | None, deps: lamina.Deps, max_connections: int, what: str) -> tuple[Any, bool]:
    """The pool a provider uses: its own when its config names a database, else the stack storage's. Returns
    (pool, whether the provider owns it and must close it)."""
    from lamina_storage_postgres.database import create_pool
    from lamina_storage_postgres.storage import PostgresStorage

    if url is not None:
        pool = await create_pool(url.get_secret_value(), store=what, min_size=1, max_size=max_connections, timeout=5.0)
        return pool, True
    if isinstance(deps.storage, PostgresStorage):
        return deps.storage.pool, False
    raise RuntimeError(
        f"provider '{deps.provider_id}': set config.url, or use `storage: {{type: postgres}}` to share its database"
    )


async def create_files(config: PostgresFilesConfig, deps: lamina.Deps) -> Any:
    from lamina_storage_postgres.database import prepare
    from lamina_storage_postgres.files import SCHEMA, PostgresFiles

    store = f"postgres (files provider '{deps.provider_id}')"
    pool, owned = await shared_pool(config.url, deps, config.max_connections, store)
    await prepare(pool, SCHEMA, auto_migrate=config.migrate, store=store)
    return PostgresFiles(pool, deps.data_dir / "spool", config.max_upload_bytes, store, owns_pool=owned)


@lamina.hookimpl
def register_storage_backends() -> list[lamina.StorageBackendSpec]:
    return [
        lamina.StorageBackendSpec(
            type="postgres",
            config=PostgresStorageConfig,
            create=open_storage,
            description="registries and jobs in PostgreSQL, shared by replicas on any number of machines",
        )
    ]


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="files",
            type="remote::postgres",
            config=PostgresFilesConfig,
            create=create_files,
            description="Uploaded files' bytes in PostgreSQL (1 MiB rows), readable by every replica",
        )
    ]


async def _db(url: str, upgrade: bool, components: tuple[str, ...]) -> list[tuple[str, int, int, str]]:
    import asyncpg

    from lamina_storage_postgres.database import installed_schemas, migrate, schema_versions

    schemas = installed_schemas()
    unknown = set(components) - {schema.component for schema in schemas}
    if unknown:
        raise click.UsageError(
            f"no component {', '.join(sorted(unknown))}; installed: {', '.join(s.component for s in schemas)}"
        )
    connection = await asyncpg.connect(url, timeout=10)
    try:
        report = []
        for schema in schemas:
            note = ""
            if upgrade and (not components or schema.component in components):
                try:
                    applied = await migrate(connection, schema)
                    note = f", applied {applied}" if applied else ""
                except (asyncpg.PostgresError, RuntimeError) as exc:
                    note = f", FAILED: {exc}"  # the others still migrate; one failure is reported, not fatal
            current = (await schema_versions(connection)).get(schema.component, 0)
            report.append((schema.component, current, schema.latest, note))
        return report
    finally:
        await connection.close()


def _run_db(url: str | None, upgrade: bool, components: tuple[str, ...] = ()) -> None:
    if not url:
        raise click.UsageError("give the database: --url postgresql://... or POSTGRES_URL")
    try:
        report = asyncio.run(_db(url, upgrade, components))
    except OSError as exc:
        raise click.ClickException(f"cannot reach the database: {exc}") from None
    for component, current, latest, note in report:
        state = "current" if current == latest else "behind (run `lamina db upgrade`)" if current < latest else "newer"
        click.echo(f"{component:12} version {current} of {latest}: {state}{note}")
    if any("FAILED" in note for *_, note in report):
        sys.exit(1)


URL_OPTION = click.option(
    "--url", envvar="POSTGRES_URL", help="postgresql://user:password@host:5432/database (default: $POSTGRES_URL)"
)


@lamina.hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.group("db")
    def db() -> None:
        """Schema migrations of Lamina's tables in PostgreSQL (for operators who migrate out of band)."""

    @db.command("status")
    @URL_OPTION
    def status(url: str | None) -> None:
        """Show each installed component's schema version in the database and the version it needs."""
        _run_db(url, upgrade=False)

    @db.command("upgrade")
    @URL_OPTION
    @click.argument("components", nargs=-1)
    def upgrade(url: str | None, components: tuple[str, ...]) -> None:
        """Apply the pending migrations of COMPONENTS (default: every installed one); safe while replicas run
        or start."""
        _run_db(url, upgrade=True, components=components)
