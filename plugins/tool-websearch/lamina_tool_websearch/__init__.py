"""remote::web-search — web search for Lamina's tool runtime API, and through it the Responses API's `web_search`
tool: a search API an operator runs or rents, SearXNG's JSON API (`GET /search?q=...&format=json`) or a
Brave-compatible one (`GET /res/v1/web/search?q=...` with an `X-Subscription-Token`).

Only pydantic and lamina are imported here; aiohttp when the provider is created.
"""

from __future__ import annotations

from typing import Any, Literal

import lamina
from pydantic import Field


class WebSearchConfig(lamina.ProviderConfig):
    base_url: str = Field(
        pattern=r"^https?://[^/\s]+",
        description="the search API's root, e.g. http://127.0.0.1:8888 for SearXNG (whose settings must allow the "
        "json format) or https://api.search.brave.com for Brave",
    )
    api: Literal["searxng", "brave"] = Field("searxng", description="which API `base_url` speaks")
    api_key: str | None = Field(None, description="sent as X-Subscription-Token (brave) or as a bearer token")
    max_results: int = Field(5, ge=1, le=20, description="results of one search shown to the model")
    timeout_seconds: float = Field(10, gt=0, description="how long one search may take")
    language: str | None = Field(None, description="a language code passed to the search API (e.g. en)")


async def create(config: WebSearchConfig, deps: lamina.Deps) -> Any:
    from lamina_tool_websearch.search import WebSearch

    return WebSearch(config, deps.provider_id)


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="tool_runtime",
            type="remote::web-search",
            config=WebSearchConfig,
            create=create,
            description="Web search over SearXNG's JSON API or a Brave-compatible one (the web_search tool)",
        )
    ]
