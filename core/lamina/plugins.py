"""The plugin manager: core's own default plugins plus everything in the `lamina` entry-point group.

Each entry point is loaded on its own: one that fails to import, or whose hooks pluggy rejects, is left out and
reported in one line (`plugin lamina-x 0.1.0 failed to load: ...`) while the others keep working.
`LAMINA_PLUGINS=dist,dist` loads only those distributions (an empty value loads none) and
`LAMINA_DISABLE_PLUGINS=dist,dist` skips those; both apply before anything is imported.
`LAMINA_TRACE_PLUGINS=1` prints every hook call to stderr.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import os
import re
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from lamina import hookspecs
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

if TYPE_CHECKING:
    from lamina.config import RunConfig

log = logging.getLogger("lamina.plugins")
T = TypeVar("T")

DEFAULT_PLUGINS = ("lamina.apis", "lamina.sources", "lamina.storage.sqlite", "lamina.keys")
CORE = "lamina-stack"


class PluginError(Exception):
    """Plugins that cannot be used together (a provider type, API or distro name declared twice)."""


@dataclasses.dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that was left out: it failed to import, or pluggy rejected its hooks."""

    name: str  # the entry point's name
    package: str  # its distribution
    version: str
    error: str  # "<ExceptionType>: <message>", on one line

    def message(self) -> str:
        return f"plugin {self.package} {self.version} failed to load: {self.error}"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus where each entry-point plugin came from and which ones failed to load.

    pluggy's own `list_plugin_distinfo` is only filled by `load_setuptools_entrypoints`, which imports every
    entry point in one go; we load them one at a time, so we keep the mapping ourselves.
    """

    def __init__(self) -> None:
        super().__init__("lamina")
        self.distributions: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self.broken: list[BrokenPlugin] = []


def make_plugin_manager(*, load_entrypoints: bool = True) -> PluginManager:
    """Core's plugins plus every installed entry point that loads; the ones that do not are in `pm.broken`."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name)
    if load_entrypoints:
        _load_entrypoints(pm)
    if os.environ.get("LAMINA_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda message: print(message, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


def broken_plugins(pm: pluggy.PluginManager) -> list[BrokenPlugin]:
    return list(pm.broken) if isinstance(pm, PluginManager) else []


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503, so `lamina_x` and `Lamina-X` name the same package


def _names_from_env(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {_canonical(name.strip()) for name in value.split(",") if name.strip()}


def _load_entrypoints(pm: PluginManager) -> None:
    allowed = _names_from_env("LAMINA_PLUGINS")
    denied = _names_from_env("LAMINA_DISABLE_PLUGINS") or set()
    found = list(entry_points(group="lamina"))
    installed = {_canonical(_distribution(ep)[0]) for ep in found} | {CORE}
    for variable, names in (("LAMINA_PLUGINS", allowed or set()), ("LAMINA_DISABLE_PLUGINS", denied)):
        unknown = sorted(names - installed)
        if unknown:
            log.warning(
                "%s names %s, but no installed plugin distribution is called that (installed: %s)",
                variable,
                ", ".join(unknown),
                ", ".join(sorted(installed - {CORE})) or "none",
            )
    for ep in found:
        package = _canonical(_distribution(ep)[0])
        if (allowed is not None and package not in allowed) or package in denied:
            continue
        _load_entrypoint(pm, ep)


def _distribution(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:  # only for entry points made by hand, never for installed ones
        return ep.name, "?"
    return dist.name, dist.version


def _load_entrypoint(pm: PluginManager, ep: EntryPoint) -> None:
    package, version = _distribution(ep)
    if pm.get_plugin(ep.name) is not None:
        owner = pm.distributions.get(ep.name, (CORE, ""))[0]
        _report(
            pm, BrokenPlugin(ep.name, package, version, f"ValueError: entry point name '{ep.name}' is taken by {owner}")
        )
        return
    try:
        plugin = ep.load()
        pm.register(plugin, ep.name)
    except (Exception, SystemExit) as exc:  # a plugin's import runs arbitrary code; SystemExit from a stray sys.exit()
        if pm.get_plugin(ep.name) is not None:
            pm.unregister(name=ep.name)
        _report(pm, BrokenPlugin(ep.name, package, version, _one_line(exc)), exc)
        return
    problem = _unknown_hooks(pm, plugin)
    if problem:
        pm.unregister(plugin)  # pm.check_pending() would refuse the whole set; only this plugin is wrong
        _report(pm, BrokenPlugin(ep.name, package, version, f"PluginValidationError: {problem}"))
        return
    pm.distributions[ep.name] = (package, version)


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> str:
    """`pm.check_pending()` for one plugin: a hookimpl whose name matches no hookspec is a misspelling."""
    problems = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        if all(impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin):
            continue
        problem = f"unknown hook '{caller.name}'"
        nearest = difflib.get_close_matches(caller.name, _hook_names(), n=1)
        if nearest:
            problem += f" (did you mean {nearest[0]}?)"
        problems.append(problem)
    return "; ".join(problems)


def _hook_names() -> list[str]:
    return [name for name in vars(hookspecs) if hasattr(getattr(hookspecs, name), "lamina_spec")]


def _one_line(exc: BaseException) -> str:
    # pluggy's validation messages span several lines; a log line must not.
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _report(pm: PluginManager, broken: BrokenPlugin, exc: BaseException | None = None) -> None:
    pm.broken.append(broken)
    log.warning("%s", broken.message())
    if exc is not None:
        log.debug("the traceback of %s %s's failure:", broken.package, broken.version, exc_info=exc)


def _drop(pm: pluggy.PluginManager, name: str, exc: Exception) -> None:
    """A plugin whose hook raised is treated like one that failed to import: out, and reported once."""
    if not isinstance(pm, PluginManager) or name not in pm.distributions:
        raise exc  # core's own plugins, or one a test registered by hand: a bug to see in full
    package, version = pm.distributions.pop(name)
    pm.unregister(name=name)
    _report(pm, BrokenPlugin(name, package, version, _one_line(exc)), exc)


def call_each(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call a hook one plugin at a time, so a plugin whose hook raises is dropped instead of failing all.

    Returns (plugin name, result) in registration order, core's plugins first. Each call still goes through
    pluggy, so `LAMINA_TRACE_PLUGINS` shows it.
    """
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    results: list[tuple[str, Any]] = []
    for impl in impls:
        others = [other.plugin for other in impls if other.plugin is not impl.plugin]
        try:
            result = pm.subset_hook_caller(hook_name, others)(**kwargs)
        except PluginError:
            raise
        except Exception as exc:
            _drop(pm, impl.plugin_name, exc)
            continue
        results.extend((impl.plugin_name, item) for item in result)
    return results


def _distribution_of(pm: pluggy.PluginManager, plugin_name: str) -> tuple[str, str]:
    distributions = pm.distributions if isinstance(pm, PluginManager) else {}
    if plugin_name in distributions:
        return distributions[plugin_name]
    # Core's own plugins, or one a test registered by hand (named, but from no distribution).
    return (CORE, _core_version()) if plugin_name in DEFAULT_PLUGINS else (plugin_name, "")


def _collect(pm: pluggy.PluginManager, hook_name: str, kind: type[T], key: str) -> dict[str, T]:
    """Call a `register_*` hook and index its results (each a `kind`) by `key`, attributing each to its
    distribution. A plugin that answers with anything else is dropped like one whose hook raised."""
    collected: dict[str, T] = {}
    owners: dict[str, str] = {}
    for plugin_name, items in call_each(pm, hook_name):
        items = list(items or [])
        if wrong := [item for item in items if not isinstance(item, kind)]:
            kinds = ", ".join(sorted({type(item).__name__ for item in wrong}))
            _drop(pm, plugin_name, TypeError(f"{hook_name} returned {kinds}, not {kind.__name__}"))
            continue
        package, version = _distribution_of(pm, plugin_name)
        for item in items:
            name: str = getattr(item, key)
            if name in collected:
                raise PluginError(f"{hook_name}: '{name}' is declared by both {owners[name]} and {package}")
            if hasattr(item, "package"):
                item = dataclasses.replace(item, package=package, version=version)
            collected[name] = item
            owners[name] = package
    return collected


def _core_version() -> str:
    from lamina import __version__

    return __version__


def provider_specs(pm: pluggy.PluginManager) -> dict[str, ProviderSpec]:
    return _collect(pm, "register_providers", ProviderSpec, "type")


def api_specs(pm: pluggy.PluginManager) -> dict[str, ApiSpec]:
    return _collect(pm, "register_apis", ApiSpec, "name")


def model_catalogue(pm: pluggy.PluginManager) -> dict[str, CatalogueEntry]:
    return _collect(pm, "register_model_catalogue", CatalogueEntry, "name")


def storage_backends(pm: pluggy.PluginManager) -> dict[str, StorageBackendSpec]:
    return _collect(pm, "register_storage_backends", StorageBackendSpec, "type")


def distro_specs(pm: pluggy.PluginManager) -> dict[str, DistroSpec]:
    return _collect(pm, "register_distros", DistroSpec, "name")


def model_sources(pm: pluggy.PluginManager) -> dict[str, ModelSource]:
    return _collect(pm, "register_model_sources", ModelSource, "scheme")


def guardrail_specs(pm: pluggy.PluginManager) -> dict[str, GuardrailSpec]:
    return _collect(pm, "register_guardrails", GuardrailSpec, "name")


def auth_provider_specs(pm: pluggy.PluginManager) -> dict[str, AuthProviderSpec]:
    return _collect(pm, "register_auth_providers", AuthProviderSpec, "type")


def list_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Every plugin, loaded ones (`status` "ok") then broken ones (`status` "broken", with `error`)."""
    plugins = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        package, version = _distribution_of(pm, name)
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        plugins.append(
            {"name": name, "package": package, "version": version, "hooks": hooks, "status": "ok", "error": None}
        )
    for broken in broken_plugins(pm):
        plugins.append(
            {
                "name": broken.name,
                "package": broken.package,
                "version": broken.version,
                "hooks": [],
                "status": "broken",
                "error": broken.error,
            }
        )
    return plugins


def unavailable_provider(pm: pluggy.PluginManager, config: RunConfig) -> str | None:
    """Why a provider type the run config names is missing, when a plugin that failed to load seems to be its.

    A plugin that failed to load declared nothing, so this matches by name: `inline::x` or `remote::x` against a
    distribution called `lamina-x`, `lamina-<api>-x`, `lamina-remote-x`, or an entry point called `x`.
    """
    broken = broken_plugins(pm)
    if not broken:
        return None
    known = provider_specs(pm)
    for entries in config.providers.values():
        for entry in entries:
            if entry.type in known:
                continue
            name = _canonical(entry.type.partition("::")[2] or entry.type)
            for plugin in broken:
                if name == _canonical(plugin.name) or _canonical(plugin.package).endswith(f"-{name}"):
                    return (
                        f"{config.source}: provider '{entry.id}' has type '{entry.type}', and the plugin that "
                        f"provides it, {plugin.package} {plugin.version}, failed to load: {plugin.error}"
                    )
    return None
