"""The rerank API (Llama Stack's `/v1alpha/inference/rerank`): order texts by relevance to a query.

Its own API rather than part of inference: a reranker is a different kind of model with a one-method provider
Protocol (`rerank`), served by providers that do nothing else (a cross-encoder, a server's `/v1/rerank`), so an
inference provider need not grow a method it cannot serve, and vector-store search can depend on reranking alone.
The path stays Llama Stack's.
"""

from __future__ import annotations

from typing import Any

from lamina.apis.rerank.router import RerankRouter
from lamina.apis.rerank.routes import ROUTES
from lamina.apis.rerank.types import RerankConfig
from lamina.specs import ApiSpec, RouterDeps


async def create_router(config: RerankConfig, providers: dict[str, Any], deps: RouterDeps) -> RerankRouter:
    return RerankRouter(config, providers, deps.source)


API = ApiSpec(
    name="rerank",
    description="Llama Stack reranking: order texts by relevance to a query with a reranker model",
    config=RerankConfig,
    router=create_router,
    routes=ROUTES,
)
