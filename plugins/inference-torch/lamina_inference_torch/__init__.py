"""Lamina's `inline::torch` inference provider: a compact decoder (Llama, Qwen, Gemma, Phi-3, Mistral) in PyTorch.

This entry-point module must stay light: core loads every plugin at startup, and torch is imported only
when a stack actually creates this provider.
"""

from __future__ import annotations

from typing import Any

from lamina.hookspecs import hookimpl
from lamina.specs import Deps, ProviderSpec

from lamina_inference_torch.config import TorchConfig

__all__ = ["TorchConfig", "create", "register_providers"]


async def create(config: TorchConfig, deps: Deps) -> Any:
    from lamina_inference_torch.provider import create_provider

    return await create_provider(config, deps)


@hookimpl
def register_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            api="inference",
            type="inline::torch",
            config=TorchConfig,
            create=create,
            description="Llama, Qwen 2/3, Gemma 2/3, Phi-3 and Mistral models on CPU with PyTorch, continuously batched",
        )
    ]
