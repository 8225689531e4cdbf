"""remote::anthropic — chat completions served by Anthropic's Messages API (or anything that speaks it)."""

from __future__ import annotations

from typing import Any

import lamina
from pydantic import Field, SecretStr, field_validator


class AnthropicConfig(lamina.ProviderConfig):
    base_url: str = Field("https://api.anthropic.com", description="the API's root, without /v1")
    api_key: SecretStr | None = None
    anthropic_version: str = Field("2023-06-01", description="the anthropic-version header")
    default_max_tokens: int = Field(4096, ge=1, description="max_tokens when a chat request sets none")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to open a connection")
    read_timeout: float = Field(600.0, gt=0, description="seconds to wait for the next byte of an answer")
    max_retries: int = Field(2, ge=0, description="retries on connection errors, 429, 5xx and 529 before any byte")
    retry_backoff: float = Field(0.5, ge=0, description="first retry delay in seconds; doubles each retry")
    max_connections: int = Field(256, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
    models: list[str] | None = Field(None, description="serve these instead of asking the upstream's /v1/models")

    @field_validator("base_url")
    @classmethod
    def _root(cls, url: str) -> str:
        return url.rstrip("/").removesuffix("/v1")


async def create(config: AnthropicConfig, deps: lamina.Deps) -> Any:
    from lamina_remote_anthropic.adapter import AnthropicAdapter  # aiohttp is imported only when used

    return AnthropicAdapter(config, deps.provider_id)


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="inference",
            type="remote::anthropic",
            config=AnthropicConfig,
            create=create,
            description="Chat completions served by Anthropic's Messages API (Claude)",
        )
    ]
