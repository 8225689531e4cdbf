"""remote::openai — any OpenAI-compatible upstream: OpenAI, vLLM, llama.cpp's server, Ollama, Together, Groq."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

import lamina
from lamina.config import redact
from pydantic import Field, SecretStr, model_validator

PRESETS = {
    "openai": "https://api.openai.com/v1",
    "vllm": "http://localhost:8000/v1",
    "llamacpp": "http://localhost:8080/v1",
    "ollama": "http://localhost:11434/v1",
    "lmstudio": "http://localhost:1234/v1",
    "together": "https://api.together.xyz/v1",
    "groq": "https://api.groq.com/openai/v1",
}


class OpenAIConfig(lamina.ProviderConfig):
    preset: Literal["openai", "vllm", "llamacpp", "ollama", "lmstudio", "together", "groq"] | None = None
    base_url: str | None = Field(None, description="e.g. http://localhost:8000/v1; defaults to the preset's")
    api_key: SecretStr | None = None
    connect_timeout: float = Field(10.0, gt=0, description="seconds to open a connection")
    first_byte_timeout: float = Field(
        120.0, gt=0, description="seconds from sending a request to the answer's headers (a whole non-streamed answer)"
    )
    read_timeout: float = Field(60.0, gt=0, description="seconds an answer may pause between two bytes")
    deadline: float = Field(
        300.0, gt=0, description="seconds one request may take before its answer starts, retries and waits included"
    )
    discovery_timeout: float = Field(10.0, gt=0, description="seconds to list the upstream's models")
    max_retries: int = Field(
        2,
        ge=0,
        description="retries of requests the upstream never received (connection errors), or refused with 429/503",
    )
    retry_backoff: float = Field(0.5, ge=0, description="first retry delay in seconds; doubles each retry")
    max_connections: int = Field(256, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
    models: list[str] | None = Field(None, description="serve these instead of asking the upstream's /models")
    embedding_models: list[str] = Field([], description="model ids to list as embedding models")

    @model_validator(mode="after")
    def _base_url_from_preset(self) -> OpenAIConfig:
        if self.base_url is None:
            if self.preset is None:
                raise ValueError("set base_url (e.g. http://localhost:8000/v1) or a preset")
            self.base_url = PRESETS[self.preset]
        self.base_url = self.base_url.rstrip("/")
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got '{redact(self.base_url)}'")
        has_authorization = any(name.lower() == "authorization" for name in self.headers)
        if (url.username or url.password) and (self.api_key is not None or has_authorization):
            # aiohttp refuses a request carrying both, so every call would fail: say so now, at start-up.
            raise ValueError("base_url carries credentials (user:password@) and so do api_key/headers; keep one")
        return self


async def create(config: OpenAIConfig, deps: lamina.Deps) -> Any:
    from lamina_remote_openai.adapter import OpenAIAdapter  # aiohttp is imported only when used

    return OpenAIAdapter(config, deps.provider_id)


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="inference",
            type="remote::openai",
            config=OpenAIConfig,
            create=create,
            description="Any OpenAI-compatible server: OpenAI, vLLM, llama.cpp, Ollama, LM Studio, Together, Groq",
        )
    ]
