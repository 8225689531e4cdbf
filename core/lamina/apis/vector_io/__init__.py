"""The vector stores API: OpenAI's vector stores (files, batches, search) and raw vector IO.

The router owns the OpenAI objects (stores, files, batches: statuses, counts, attributes), kept in the stack's
storage; a `vector_io` provider owns chunks, embeddings and the indexes. Ingestion runs in the background.

Search modes (an extension, `search_mode`): `vector` (cosine similarity), `keyword` (BM25, score b/(1+b) for
b = -bm25) and `hybrid`: reciprocal-rank fusion, score = sum over both rankings of 1/(RRF_K + rank), divided by
its maximum 2/(RRF_K + 1) so a chunk ranked first by both scores 1.0.
"""

from __future__ import annotations

from typing import Any

from lamina.apis.vector_io.router import VectorStoresRouter
from lamina.apis.vector_io.routes import ROUTES
from lamina.apis.vector_io.types import VectorIOConfig
from lamina.specs import ApiSpec, RouterDeps


async def create_router(config: VectorIOConfig, providers: dict[str, Any], deps: RouterDeps) -> VectorStoresRouter:
    router = VectorStoresRouter(config, providers, deps)
    await router.start()
    return router


API = ApiSpec(
    name="vector_io",
    description="OpenAI vector stores (files, batches, search) and raw vector IO",
    config=VectorIOConfig,
    router=create_router,
    needs=("inference", "files", "rerank", "file_processors"),
    routes=ROUTES,
)
