"""Turn a run config into a running stack: providers started in dependency order, one router per API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pluggy
from pydantic import BaseModel
from starlette.applications import Starlette

from lamina import observe
from lamina.auth import Auth, check_auth, start_auth
from lamina.config import ConfigError, ProviderEntry, RunConfig, validate_section
from lamina.guardrails import GuardrailChain
from lamina.plugins import (
    api_specs,
    guardrail_specs,
    make_plugin_manager,
    provider_specs,
    storage_backends,
    unavailable_provider,
)
from lamina.providers import proxy
from lamina.shared import Shared, fingerprint
from lamina.specs import ApiSpec, Deps, ProviderSpec, RouterDeps, Started
from lamina.storage import Storage

log = logging.getLogger("lamina")
R = TypeVar("R")


@dataclass
class Stack:
    """A started stack: what the server and the library client serve."""

    config: RunConfig
    pm: pluggy.PluginManager
    storage: Storage
    api_specs: dict[str, ApiSpec]
    guardrails: GuardrailChain
    provider_specs: dict[str, ProviderSpec] = field(default_factory=dict)  # provider id -> its spec
    provider_configs: dict[str, BaseModel] = field(default_factory=dict)  # provider id -> its validated config
    apis: dict[str, object] = field(default_factory=dict)  # API name -> router
    providers: dict[str, object] = field(default_factory=dict)  # provider id -> instance
    auth: Auth | None = None  # the `auth:` section, started; None when auth is off
    shared: Shared = field(default_factory=Shared)  # what processes share beyond storage (`redis:`)
    _by_type: dict[type, object] = field(default_factory=dict, repr=False)
    _app: Starlette | None = field(default=None, repr=False)

    def http_app(self) -> Starlette:
        """The stack's routes as one Starlette app, without the HTTP edge's middleware: what the server wraps, and
        what routers send requests made on a caller's behalf to (`lamina.internal`)."""
        if self._app is None:
            from lamina.server import routes_app  # the server module imports this one

            self._app = routes_app(self)
        return self._app

    def api(self, kind: type[R]) -> R:
        """The router of type `kind` (e.g. `stack.api(InferenceRouter)`); route handlers call this per request."""
        router = self._by_type.get(kind)
        if not isinstance(router, kind):  # the first call for this type
            router = self._by_type[kind] = Started(self.apis).api(kind)
        return router


@dataclass
class Plan:
    """A run config checked against the installed plugins, before anything starts."""

    apis: dict[str, ApiSpec]
    types: dict[str, ProviderSpec]  # provider type -> its spec
    order: list[str]  # APIs, each after those it needs
    api_configs: dict[str, BaseModel]
    provider_configs: dict[str, BaseModel]  # provider id -> validated config
    storage_config: BaseModel


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


def with_automatic_providers(config: RunConfig, types: dict[str, ProviderSpec]) -> RunConfig:
    """The run config plus, for every API it lists no provider of, the installed `auto` provider types of that API
    (`ProviderSpec.auto`) with their default configs."""
    automatic: dict[str, list[ProviderEntry]] = {}
    for spec in types.values():
        if spec.auto and not config.providers.get(spec.api):
            automatic.setdefault(spec.api, []).append(ProviderEntry(id=spec.type.replace("::", "-"), type=spec.type))
    if not automatic:
        return config
    return config.model_copy(update={"providers": {**config.providers, **automatic}})


def check(config: RunConfig, pm: pluggy.PluginManager) -> Plan:
    """Validate a run config against the installed plugins (API, provider and storage configs included) without
    starting anything. Raises ConfigError naming the file and the key."""
    if reason := unavailable_provider(pm, config):
        raise ConfigError(reason)
    apis, types = api_specs(pm), provider_specs(pm)
    config = with_automatic_providers(config, types)
    order = plan(config, apis, types)
    for name in config.apis:
        if name not in apis:
            raise ConfigError(f"{config.source}: apis.{name}: unknown API; known: {', '.join(sorted(apis))}")
    api_configs = {
        name: validate_section(spec.config, config.apis.get(name), config.source, f"apis.{name}")
        for name, spec in apis.items()
    }
    provider_configs = {
        entry.id: validate_section(
            types[entry.type].config, entry.config, config.source, f"providers.{api} '{entry.id}' config"
        )
        for api, entries in config.providers.items()
        for entry in entries
    }
    backends = storage_backends(pm)
    backend = backends.get(config.storage.type)
    if backend is None:
        raise ConfigError(
            f"{config.source}: storage.type: no storage backend '{config.storage.type}' is installed; "
            f"known: {', '.join(sorted(backends)) or 'none'}"
        )
    storage_config = validate_section(backend.config, config.storage.config, config.source, "storage.config")
    check_auth(config.auth, pm, config.source)
    return Plan(apis, types, order, api_configs, provider_configs, storage_config)


@asynccontextmanager
async def start_stack(config: RunConfig, pm: pluggy.PluginManager | None = None) -> AsyncIterator[Stack]:
    """Start storage, then every API's providers and router in dependency order, then the guardrails; on exit
    close everything in reverse order."""
    pm = pm or make_plugin_manager()
    config = with_automatic_providers(config, provider_specs(pm))
    checked = check(config, pm)
    apis, types = checked.apis, checked.types
    data_dir = config.data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as exits:
        # Before anything starts, so providers' HTTP sessions and first calls are observed too.
        # The process has one observer: the last stack started decides, none included, until it closes.
        observer: observe.Observer | None = pm.hook.observer(config=config)
        exits.push_async_callback(_stop_observing, observer, observe.install(observer))
        storage = await storage_backends(pm)[config.storage.type].create(checked.storage_config, data_dir)
        exits.push_async_callback(storage.close)
        stack = Stack(config, pm, storage, apis, GuardrailChain())
        stack.shared = Shared(config.redis, _fingerprints(config))
        await stack.shared.start()
        exits.push_async_callback(stack.shared.close)
        stack.auth = await start_auth(config.auth, pm, storage, data_dir, exits, config.source)
        for api in checked.order:
            providers: dict[str, Any] = {}
            for entry in config.providers.get(api, []):
                spec = types[entry.type]
                wanted = {*spec.needs, *spec.optional_needs}
                deps = Deps(
                    apis={name: router for name, router in stack.apis.items() if name in wanted},
                    provider_id=entry.id,
                    data_dir=data_dir / entry.id,
                    storage=storage,
                )
                deps.data_dir.mkdir(parents=True, exist_ok=True)
                log.info("starting provider %s (%s)", entry.id, entry.type)
                provider = await spec.create(checked.provider_configs[entry.id], deps)
                _push_close(exits, provider)
                providers[entry.id] = proxy(provider, entry.id, spec)
                stack.providers[entry.id] = provider
                stack.provider_specs[entry.id] = spec
                stack.provider_configs[entry.id] = checked.provider_configs[entry.id]
            router_deps = RouterDeps(
                apis={name: stack.apis[name] for name in apis[api].needs},
                api_name=api,
                source=config.source,
                data_dir=data_dir,
                storage=storage,
                guardrails=stack.guardrails,
                app=stack.http_app,
                auth=stack.auth,
                shared=stack.shared,
            )
            router = await apis[api].router(checked.api_configs[api], providers, router_deps)
            _push_close(exits, router)
            stack.apis[api] = router
        # Guardrails judge text with other APIs (a shield through safety, Llama Guard through inference), so they
        # are made once every API has started, and installed on the chain the text-generating routers hold.
        final = RouterDeps(
            apis=dict(stack.apis),
            api_name="",
            source=config.source,
            data_dir=data_dir,
            storage=storage,
            guardrails=stack.guardrails,
            app=stack.http_app,
            auth=stack.auth,
            shared=stack.shared,
        )
        for guardrail_spec in guardrail_specs(pm).values():
            stack.guardrails.install(await guardrail_spec.create(final) or [])
        if stack.guardrails.guardrails:
            log.info("guardrails on text generation: %s", ", ".join(g.name for g in stack.guardrails.guardrails))
        yield stack


def _fingerprints(config: RunConfig) -> dict[str, str]:
    """Provider id -> digest of its type and config: processes configured alike share its cached model list."""
    return {
        entry.id: fingerprint([entry.type, entry.config]) for entries in config.providers.values() for entry in entries
    }


async def _stop_observing(observer: observe.Observer | None, previous: observe.Observer | None) -> None:
    if observe.current() is observer:
        observe.install(previous)
    if observer is not None:
        await observer.close()


def _push_close(exits: AsyncExitStack, obj: Any) -> None:
    close = getattr(obj, "close", None)
    if close is not None:
        exits.push_async_callback(close)
