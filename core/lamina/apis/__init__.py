"""Core's built-in APIs, registered through core's own hook like any plugin's.

Every API is a package of the same shape: `types.py` (wire models and config), `provider.py` (what its
providers implement), `router.py` (dispatch to providers), `routes.py` (HTTP handlers), and `__init__.py` holding
its `ApiSpec`.
"""

from __future__ import annotations

from lamina.hookspecs import hookimpl
from lamina.specs import ApiSpec, GuardrailSpec, ProviderSpec


@hookimpl
def register_apis() -> list[ApiSpec]:
    from lamina.apis import (
        batches,
        conversations,
        file_processors,
        files,
        inference,
        prompts,
        rerank,
        responses,
        safety,
        tool_runtime,
        vector_io,
    )

    return [
        inference.API,
        files.API,
        vector_io.API,
        safety.API,
        batches.API,
        prompts.API,
        tool_runtime.API,
        conversations.API,
        responses.API,
        rerank.API,
        file_processors.API,
    ]


@hookimpl
def register_guardrails() -> list[GuardrailSpec]:
    from lamina.apis.safety.guardrails import SHIELD_GUARDRAILS

    return [SHIELD_GUARDRAILS]


@hookimpl
def register_providers() -> list[ProviderSpec]:
    from lamina.apis.file_processors.builtin import PROVIDERS

    return list(PROVIDERS)
