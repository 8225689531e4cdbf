"""The plugin manager: core's own default plugins plus everything in the `lamina` entry-point group.

`LAMINA_PLUGINS=name,name` restricts loading to those distributions (an empty value loads none);
`LAMINA_TRACE_PLUGINS=1` logs every hook call.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
from typing import Any

import pluggy

from lamina import hookspecs
from lamina.specs import ApiSpec, DistroSpec, GuardrailSpec, ModelSource, ProviderSpec

log = logging.getLogger("lamina.plugins")

DEFAULT_PLUGINS = ("lamina.apis", "lamina.sources")


class PluginError(Exception):
    """Plugins that cannot be loaded together (a name declared twice, an unknown hook)."""


def make_plugin_manager(*, load_entrypoints: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("lamina")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name)
    if load_entrypoints:
        _load_entrypoints(pm)
    try:
        pm.check_pending()  # a misspelt hook name fails here, naming the plugin, instead of being ignored
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from None
    if os.environ.get("LAMINA_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda message: print(message, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


def _load_entrypoints(pm: pluggy.PluginManager) -> None:
    pm.load_setuptools_entrypoints("lamina")
    allowed = os.environ.get("LAMINA_PLUGINS")
    if allowed is None:
        return
    names = {name.strip() for name in allowed.split(",") if name.strip()}
    for plugin, dist in pm.list_plugin_distinfo():
        if dist.project_name not in names and pm.is_registered(plugin):
            pm.unregister(plugin)


def _distribution_of(pm: pluggy.PluginManager) -> dict[int, tuple[str, str]]:
    return {id(plugin): (dist.project_name, dist.version) for plugin, dist in pm.list_plugin_distinfo()}


def _collect(pm: pluggy.PluginManager, hook_name: str, key: str) -> dict[str, Any]:
    """Call a `register_*` hook and index its results by `key`, attributing each to its distribution."""
    dists = _distribution_of(pm)
    collected: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        package, version = dists.get(id(impl.plugin), ("lamina-stack", _core_version()))
        for item in impl.function() or []:
            name = getattr(item, key)
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
    return _collect(pm, "register_providers", "type")


def api_specs(pm: pluggy.PluginManager) -> dict[str, ApiSpec]:
    return _collect(pm, "register_apis", "name")


def distro_specs(pm: pluggy.PluginManager) -> dict[str, DistroSpec]:
    return _collect(pm, "register_distros", "name")


def model_sources(pm: pluggy.PluginManager) -> dict[str, ModelSource]:
    return _collect(pm, "register_model_sources", "scheme")


def guardrail_specs(pm: pluggy.PluginManager) -> dict[str, GuardrailSpec]:
    return _collect(pm, "register_guardrails", "name")


def list_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    dists = _distribution_of(pm)
    plugins = []
    for name, plugin in pm.list_name_plugin():
        package, version = dists.get(id(plugin), ("lamina-stack", _core_version()))
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        plugins.append({"name": name, "package": package, "version": version, "hooks": hooks})
    return plugins
