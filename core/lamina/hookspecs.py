"""Every hook a Lamina plugin can implement. All run once, when the stack or CLI is assembled.

These are declarations: pluggy calls the plugins' implementations, never the bodies here (which raise, to say so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy
from starlette.types import ASGIApp

if TYPE_CHECKING:
    import click

    from lamina.config import RunConfig
    from lamina.observe import Observer
    from lamina.resolver import Stack
    from lamina.specs import (
        ApiSpec,
        AuthProviderSpec,
        CatalogueEntry,
        DistroSpec,
        GuardrailSpec,
        ModelSource,
        ProviderSpec,
        StorageBackendSpec,
    )

hookspec = pluggy.HookspecMarker("lamina")
hookimpl = pluggy.HookimplMarker("lamina")


@hookspec
def register_apis() -> list[ApiSpec]:
    """APIs this plugin adds: a name, its /v1 routes, and the router that dispatches to providers."""
    raise NotImplementedError


@hookspec
def register_providers() -> list[ProviderSpec]:
    """Provider types this plugin offers: API, `inline::`/`remote::` type, config model, async create."""
    raise NotImplementedError


@hookspec
def register_storage_backends() -> list[StorageBackendSpec]:
    """Storage backends (where registries and jobs are kept), chosen by the run config's `storage.type`."""
    raise NotImplementedError


@hookspec
def register_distros() -> list[DistroSpec]:
    """Distros this package ships: a name and a run-config template."""
    raise NotImplementedError


@hookspec
def register_model_sources() -> list[ModelSource]:
    """Places `lamina models pull` can fetch models from, one URL-like scheme each."""
    raise NotImplementedError


@hookspec
def register_model_catalogue() -> list[CatalogueEntry]:
    """Models `lamina models pull NAME` knows by name, each mapped to a reference one of the model sources fetches."""
    raise NotImplementedError


@hookspec
def register_guardrails() -> list[GuardrailSpec]:
    """Guardrails on text generation: checks of the input before the provider runs and of the output as it streams."""
    raise NotImplementedError


@hookspec
def register_auth_providers() -> list[AuthProviderSpec]:
    """Ways to authenticate callers (API keys, JWTs, ...), chosen by the run config's `auth.providers`."""
    raise NotImplementedError


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the `lamina` command group."""


@hookspec
def asgi_wrapper(stack: Stack) -> Callable[[ASGIApp], ASGIApp] | None:
    """Wrap the finished ASGI app with middleware; wrappers apply in hook call order."""


@hookspec(firstresult=True)
def observer(config: RunConfig) -> Observer | None:
    """Observability for the stack about to start (tracing, metrics): an `Observer` installed until it closes."""
