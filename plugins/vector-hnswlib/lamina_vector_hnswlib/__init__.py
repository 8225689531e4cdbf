"""inline::hnswlib — vector stores on hnswlib (one cosine index per store) with chunks and FTS5 in SQLite."""

from __future__ import annotations

from typing import Any, Literal

import lamina
from pydantic import Field


class HnswlibConfig(lamina.ProviderConfig):
    M: int = Field(16, ge=2, le=128, description="graph degree: higher is more accurate, bigger and slower to build")
    ef_construction: int = Field(128, ge=8, description="build-time beam width")
    ef_search: int = Field(64, ge=1, description="query-time beam width (raised to k when k is larger)")
    save_interval_seconds: float = Field(10.0, gt=0, description="how often changed indexes are written to disk")
    threads: int = Field(-1, description="threads for index builds and batched queries; -1 = all cores")
    capabilities: list[Literal["vector", "keyword", "hybrid", "filters"]] = Field(
        ["vector", "keyword", "hybrid", "filters"],
        description="what the provider does itself; leave some out to have the router do them (slower)",
    )


async def create(config: HnswlibConfig, deps: lamina.Deps) -> Any:
    from lamina_vector_hnswlib.store import HnswlibVectorIO

    return await HnswlibVectorIO.open(deps.data_dir, config)


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="vector_io",
            type="inline::hnswlib",
            config=HnswlibConfig,
            create=create,
            description="hnswlib vector indexes with chunks, metadata and FTS5 keyword search in SQLite",
        )
    ]
