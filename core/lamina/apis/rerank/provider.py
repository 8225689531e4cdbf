"""What a rerank provider implements: scoring how relevant each of some texts is to a query.

Attributes and methods
    `models: list[str]`
        The provider's own ids of the reranker models it serves (usually from its config). The router registers
        each as `<provider_id>/<model>`; a request naming anything else is a 404.
    `async rerank(model, query, items, top_n) -> list[tuple[int, float]]`
        `(index into items, relevance score)` pairs, most relevant first, at most `top_n` of them (all when
        `top_n` is None). Higher scores mean more relevant; their scale is the model's. An unreachable upstream
        is a `lamina.UpstreamError` (503), never a bare exception.
    `close() -> None` (optional)
        Called once at shutdown.
"""

from __future__ import annotations

from typing import Protocol


class RerankProvider(Protocol):
    models: list[str]

    async def rerank(self, model: str, query: str, items: list[str], top_n: int | None) -> list[tuple[int, float]]: ...
