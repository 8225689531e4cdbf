"""Core's built-in APIs, registered through core's own hook like any plugin's."""

from __future__ import annotations

from lamina.hookspecs import hookimpl
from lamina.specs import ApiSpec


@hookimpl
def register_apis() -> list[ApiSpec]:
    from lamina.apis import inference_routes

    return [inference_routes.API]
