"""The rerank router: the registry of reranker models (`<provider_id>/<model>` plus the config's aliases) and
dispatch to the provider serving each."""

from __future__ import annotations

from typing import Any

from lamina.apis.rerank.provider import RerankProvider
from lamina.apis.rerank.types import RerankConfig, RerankRequest, TextPart
from lamina.config import ConfigError
from lamina.errors import bad_request, not_found


class RerankRouter:
    def __init__(self, config: RerankConfig, providers: dict[str, RerankProvider], source: str) -> None:
        self.providers = providers
        self.models: dict[str, tuple[str, str]] = {}  # registered id -> (provider id, provider's model id)
        for provider_id, provider in providers.items():
            for model in provider.models:
                self.models[f"{provider_id}/{model}"] = (provider_id, model)
        for alias, target in config.models.items():
            if target not in self.models:
                raise ConfigError(
                    f"{source}: apis.rerank.models.{alias}: '{target}' is no model of a configured rerank provider; "
                    f"known: {', '.join(sorted(self.models)) or 'none'}"
                )
            self.models[alias] = self.models[target]

    def knows(self, model: str) -> bool:
        return model in self.models

    def list_models(self) -> list[dict[str, Any]]:
        return [
            {"id": model_id, "object": "model", "owned_by": provider_id, "model_type": "rerank"}
            for model_id, (provider_id, _) in sorted(self.models.items())
        ]

    async def rerank(self, model: str, query: str, items: list[str], top_n: int | None) -> list[tuple[int, float]]:
        """(index, score) pairs, best first. Unknown model: 404; empty query or items: 400."""
        if model not in self.models:
            raise not_found(
                f"reranker model '{model}' not found; known: {', '.join(sorted(self.models)) or 'none'}",
                param="model",
                code="model_not_found",
            )
        if not query.strip():
            raise bad_request("query must not be empty", param="query")
        if not items:
            raise bad_request("items must not be empty", param="items")
        provider_id, provider_model = self.models[model]
        ranked = await self.providers[provider_id].rerank(provider_model, query, items, top_n)
        return ranked if top_n is None else ranked[:top_n]

    async def handle(self, request: RerankRequest) -> dict[str, Any]:
        def text(value: str | TextPart) -> str:
            return value if isinstance(value, str) else value.text

        ranked = await self.rerank(
            request.model, text(request.query), [text(item) for item in request.items], request.max_num_results
        )
        return {"data": [{"index": index, "relevance_score": score} for index, score in ranked]}
