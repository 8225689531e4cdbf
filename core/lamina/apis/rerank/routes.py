"""The rerank API's HTTP routes (Llama Stack's paths)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.rerank.router import RerankRouter
from lamina.apis.rerank.types import RerankRequest, RerankResponse
from lamina.http import json_response, parse_body, route, router_of


async def rerank(request: Request) -> Response:
    """Order `items` by relevance to `query` with a reranker model: `data` holds `{index, relevance_score}`, best
    first, at most `max_num_results`."""
    router = router_of(request, RerankRouter)
    return json_response(await router.handle(await parse_body(request, RerankRequest)))


async def list_models(request: Request) -> Response:
    """The registered reranker models."""
    return json_response({"object": "list", "data": router_of(request, RerankRouter).list_models()})


ROUTES = [
    route("POST", "/inference/rerank", rerank, body=RerankRequest, response=RerankResponse, prefix="/v1alpha"),
    route("GET", "/inference/rerank/models", list_models, prefix="/v1alpha"),
]
