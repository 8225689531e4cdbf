"""inline::llama-guard — Llama Guard 3 shields, asked through any inference model this stack serves."""

from __future__ import annotations

from typing import Any

import lamina
from pydantic import Field


class LlamaGuardConfig(lamina.ProviderConfig):
    model: str = Field(description="the inference model id (as /v1/models lists it) that serves Llama Guard 3")
    excluded_categories: list[str] = Field([], description="hazard codes not to check, e.g. [S6, S8]")
    max_tokens: int = Field(20, ge=1, description="the verdict is two short lines")


async def create(config: LlamaGuardConfig, deps: lamina.Deps) -> Any:
    from lamina.apis.inference.router import InferenceRouter

    from lamina_safety_llama_guard.provider import LlamaGuardProvider

    return LlamaGuardProvider(config, deps.provider_id, deps.api(InferenceRouter))


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="safety",
            type="inline::llama-guard",
            config=LlamaGuardConfig,
            create=create,
            needs=("inference",),
            description="Llama Guard 3 (MLCommons hazards S1-S14) over any inference model of the stack",
        )
    ]
