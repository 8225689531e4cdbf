"""remote::pgvector — vector stores in PostgreSQL with pgvector: an HNSW index per store, keyword search on
Postgres full-text search, hybrid search fused in SQL, and attribute filters pushed down to SQL."""

from __future__ import annotations

from typing import Any, Literal

import lamina
from pydantic import Field, SecretStr


class PgvectorConfig(lamina.ProviderConfig):
    url: SecretStr | None = Field(
        None, description="a PostgreSQL with pgvector; default: the stack's storage database (storage type postgres)"
    )
    max_connections: int = Field(5, ge=1, description="connections this provider's pool opens at most")
    m: int = Field(16, ge=2, le=100, description="HNSW graph degree (pgvector's `m`)")
    ef_construction: int = Field(64, ge=4, le=1000, description="HNSW build-time beam width")
    ef_search: int = Field(100, ge=1, le=1000, description="HNSW query-time beam width (raised to k when larger)")
    exact_below: int = Field(
        5000, ge=0, description="a store with fewer chunks has no index and is searched exactly; reaching it builds one"
    )
    build_memory_mb: int = Field(512, ge=64, description="maintenance_work_mem for building an index in bulk")
    migrate: bool = Field(True, description="apply schema migrations at start-up; false: `lamina db upgrade` does")
    capabilities: list[Literal["vector", "keyword", "hybrid", "filters"]] = Field(
        ["vector", "keyword", "hybrid", "filters"],
        description="what the provider does itself; leave some out to have the router do them",
    )


async def create(config: PgvectorConfig, deps: lamina.Deps) -> Any:
    from lamina_storage_postgres import database_url

    from lamina_vector_pgvector.store import PgvectorVectorIO

    url = database_url(config.url, deps)
    if url is None:
        raise RuntimeError(
            f"provider '{deps.provider_id}': set config.url to a PostgreSQL with pgvector, "
            "or use `storage: {type: postgres}` to share its database"
        )
    return await PgvectorVectorIO.open(url, config, f"pgvector (vector_io provider '{deps.provider_id}')")


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="vector_io",
            type="remote::pgvector",
            config=PgvectorConfig,
            create=create,
            description="vector stores in PostgreSQL + pgvector: HNSW, full-text keyword search, hybrid, filters in SQL",
        )
    ]
