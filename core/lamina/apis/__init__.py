"""Core's built-in APIs, registered through core's own hook like any plugin's."""

from __future__ import annotations

from lamina.hookspecs import hookimpl
from lamina.specs import ApiSpec, GuardrailSpec


@hookimpl
def register_apis() -> list[ApiSpec]:
    from lamina.apis import files, inference_routes, safety, vector_stores

    return [inference_routes.API, files.API, vector_stores.API, safety.API]


@hookimpl
def register_guardrails() -> list[GuardrailSpec]:
    from lamina.apis import guardrails

    return [guardrails.SHIELD_GUARDRAILS]
