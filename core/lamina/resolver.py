"""Turn a run config into a running stack: providers started in dependency order, one router per API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import ValidationError

from lamina.config import ConfigError, RunConfig
from lamina.kvstore import KVStore
from lamina.plugins import api_specs, make_plugin_manager, provider_specs
from lamina.specs import ApiSpec, Deps, ProviderSpec

log = logging.getLogger("lamina")


@dataclass
class Stack:
    config: RunConfig
    pm: pluggy.PluginManager
    kvstore: KVStore
    api_specs: dict[str, ApiSpec]
    provider_specs: dict[str, ProviderSpec]  # provider id -> its spec
    apis: dict[str, Any] = field(default_factory=dict)  # API name -> router
    providers: dict[str, Any] = field(default_factory=dict)  # provider id -> instance


def plan(config: RunConfig, apis: dict[str, ApiSpec], types: dict[str, ProviderSpec]) -> list[str]:
    """The order to start APIs in, so every API starts after those it needs. Raises ConfigError."""
    for api, entries in config.providers.items():
        if api not in apis:
            raise ConfigError(f"{config.source}: providers.{api}: unknown API; known: {', '.join(sorted(apis))}")
        for entry in entries:
            spec = types.get(entry.type)
            if spec is None:
                raise ConfigError(
                    f"{config.source}: provider '{entry.id}' has type '{entry.type}', which no installed plugin "
                    f"provides (installed: {', '.join(sorted(types)) or 'none'}); install the package that "
                    "provides it, or check `lamina providers`"
                )
            if spec.api != api:
                raise ConfigError(
                    f"{config.source}: provider '{entry.id}' ({entry.type}) serves the {spec.api} API, "
                    f"but is listed under providers.{api}"
                )

    def needs_of(api: str) -> list[str]:
        needed = list(apis[api].needs)
        for entry in config.providers.get(api, []):
            spec = types[entry.type]
            for need in spec.needs:
                if not config.providers.get(need):
                    raise ConfigError(
                        f"{config.source}: provider '{entry.id}' ({entry.type}) needs the {need} API, "
                        f"but no {need} provider is configured; add one under providers.{need}"
                    )
            needed += [*spec.needs, *(n for n in spec.optional_needs if config.providers.get(n))]
        return needed

    order: list[str] = []
    visiting: list[str] = []

    def visit(api: str) -> None:
        if api in order:
            return
        if api in visiting:
            cycle = " -> ".join([*visiting[visiting.index(api) :], api])
            raise ConfigError(f"{config.source}: APIs depend on each other in a cycle: {cycle}")
        visiting.append(api)
        for need in needs_of(api):
            if need not in apis:
                raise ConfigError(f"{config.source}: the {api} API needs the {need} API, which is not installed")
            visit(need)
        visiting.pop()
        order.append(api)

    for api in sorted(apis):
        visit(api)
    return order


@asynccontextmanager
async def start_stack(config: RunConfig, pm: pluggy.PluginManager | None = None) -> AsyncIterator[Stack]:
    """Start every provider and router; on exit close them in reverse order."""
    pm = pm or make_plugin_manager()
    apis, types = api_specs(pm), provider_specs(pm)
    order = plan(config, apis, types)
    data_dir = config.data_dir()
    async with AsyncExitStack() as exits:
        kvstore = await KVStore.open(data_dir / "kvstore.db")
        exits.push_async_callback(kvstore.close)
        stack = Stack(config, pm, kvstore, apis, {})
        for api in order:
            providers: dict[str, Any] = {}
            for entry in config.providers.get(api, []):
                spec = types[entry.type]
                try:
                    provider_config = spec.config.model_validate(entry.config)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    key = ".".join(str(part) for part in first["loc"])
                    raise ConfigError(
                        f"{config.source}: providers.{api} '{entry.id}' config.{key}: {first['msg']}"
                    ) from None
                wanted = {*spec.needs, *spec.optional_needs}
                deps = Deps(
                    provider_id=entry.id,
                    apis={name: router for name, router in stack.apis.items() if name in wanted},
                    data_dir=data_dir / entry.id,
                    kvstore=kvstore,
                )
                deps.data_dir.mkdir(parents=True, exist_ok=True)
                log.info("starting provider %s (%s)", entry.id, entry.type)
                provider = await spec.create(provider_config, deps)
                _push_close(exits, provider)
                providers[entry.id] = provider
                stack.providers[entry.id] = provider
                stack.provider_specs[entry.id] = spec
            router = await apis[api].router(providers, stack)
            _push_close(exits, router)
            stack.apis[api] = router
        yield stack


def _push_close(exits: AsyncExitStack, obj: Any) -> None:
    close = getattr(obj, "close", None)
    if close is not None:
        exits.push_async_callback(close)
