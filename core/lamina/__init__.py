"""Lamina: an OpenAI-compatible server built from plugins."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from lamina.errors import LaminaError, UpstreamError, bad_request, not_found
from lamina.hookspecs import hookimpl
from lamina.specs import (
    ApiSpec,
    AuthDeps,
    AuthProviderSpec,
    CatalogueEntry,
    Deps,
    DistroSpec,
    GuardrailSpec,
    ModelSource,
    ProviderConfig,
    ProviderSpec,
    RouterDeps,
    StorageBackendSpec,
)

try:
    __version__ = version("lamina-stack")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "ApiSpec",
    "AuthDeps",
    "AuthProviderSpec",
    "CatalogueEntry",
    "Deps",
    "DistroSpec",
    "GuardrailSpec",
    "LaminaError",
    "ModelSource",
    "ProviderConfig",
    "ProviderSpec",
    "RouterDeps",
    "StorageBackendSpec",
    "UpstreamError",
    "__version__",
    "bad_request",
    "hookimpl",
    "not_found",
]
