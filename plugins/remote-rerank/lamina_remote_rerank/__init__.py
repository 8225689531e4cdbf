"""remote::rerank — a reranker behind a Jina/Cohere-style `POST /v1/rerank` (vLLM, llama.cpp's server)."""

from __future__ import annotations

from typing import Any

import lamina
from pydantic import Field, SecretStr


class RemoteRerankConfig(lamina.ProviderConfig):
    base_url: str = Field(description="e.g. http://localhost:8000/v1; requests go to <base_url>/rerank")
    models: list[str] = Field(min_length=1, description="the upstream's reranker model ids to serve")
    api_key: SecretStr | None = None
    connect_timeout: float = Field(10.0, gt=0, description="seconds to open a connection")
    read_timeout: float = Field(60.0, gt=0, description="seconds to wait for the answer")


async def create(config: RemoteRerankConfig, deps: lamina.Deps) -> Any:
    from lamina_remote_rerank.adapter import RemoteReranker  # aiohttp is imported only when used

    return RemoteReranker(config, deps.provider_id)


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="rerank",
            type="remote::rerank",
            config=RemoteRerankConfig,
            create=create,
            description="A reranker behind a Jina/Cohere-style /v1/rerank endpoint (vLLM, llama.cpp's server)",
        )
    ]
