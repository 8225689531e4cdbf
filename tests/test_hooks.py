"""Every hook is documented (docs/plugins.md has a `## name(args)` section for each hookspec, and no other) and
exercised by a test; and the one hook core's own tests did not implement, `register_storage_backends`."""

from __future__ import annotations

import inspect
import re
import sqlite3
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lamina
import pytest
import requests
from lamina import hookspecs
from lamina.config import ConfigError
from lamina.plugins import make_plugin_manager
from lamina.storage import JobQueue, KVStore, Storage
from lamina.storage.sqlite import SQLiteStorageConfig, open_storage
from lamina.testing import serve

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
HEADING = re.compile(r"^##\s+`?([A-Za-z_][A-Za-z0-9_]*)\(([^)]*)\)`?\s*$", re.MULTILINE)


def hookspec_signatures() -> dict[str, str]:
    specs = {}
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(function, "lamina_spec"):  # set by pluggy's @hookspec
            specs[name] = ", ".join(inspect.signature(function).parameters)
    return specs


def test_there_are_hookspecs() -> None:
    specs = hookspec_signatures()
    assert {"register_apis", "register_providers", "register_distros"} <= set(specs)
    assert specs["asgi_wrapper"] == "stack"


def test_every_hookspec_is_documented() -> None:
    specs = hookspec_signatures()
    assert DOC.is_file(), f"{DOC} is missing; it needs a section per hook: " + ", ".join(
        f"## {name}({args})" for name, args in sorted(specs.items())
    )
    documented = {name: re.sub(r"\s+", " ", args.strip()) for name, args in HEADING.findall(DOC.read_text())}
    missing = [f"## {name}({args})" for name, args in sorted(specs.items()) if documented.get(name) != args]
    stale = [f"## {name}({args})" for name, args in sorted(documented.items()) if name not in specs]
    assert not missing, f"{DOC} lacks (or has other arguments in) these headings: {missing}"
    assert not stale, f"{DOC} documents hooks that lamina.hookspecs does not declare: {stale}"


ROOT = DOC.parent.parent
HOOK_USE = r"(?:def\s+{name}\s*\(|\b{name}\s*=\s*[\w.]*hookimpl\b|pm\.hook\.{name}\b|call_each\([^)]*[\"']{name}[\"'])"


def test_every_hookspec_is_exercised_by_a_test() -> None:
    """Each hook is implemented (`@hookimpl def name(`, `x.name = hookimpl(...)`) or called (`pm.hook.name`,
    `call_each(pm, "name")`) somewhere under tests/ or plugins/*/tests/, so none is documented but never run."""
    sources = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("plugins/*/tests/**/*.py")]
    text = "\n".join(path.read_text() for path in sources)
    unexercised = [name for name in hookspec_signatures() if not re.search(HOOK_USE.format(name=name), text)]
    assert not unexercised, f"no test under tests/ or plugins/*/tests/ implements or calls: {unexercised}"


class NamespacedKV:
    """A KVStore that keeps every key under a prefix of another one: several stacks can share one database."""

    def __init__(self, kv: KVStore, namespace: str) -> None:
        self.kv, self.namespace = kv, namespace + "/"

    async def get(self, key: str) -> Any | None:
        return await self.kv.get(self.namespace + key)

    async def set(self, key: str, value: Any) -> None:
        await self.kv.set(self.namespace + key, value)

    async def delete(self, key: str) -> bool:
        return await self.kv.delete(self.namespace + key)

    async def values(self, prefix: str) -> list[Any]:
        return await self.kv.values(self.namespace + prefix)


class SharedConfig(lamina.ProviderConfig):
    database: str
    namespace: str


@dataclass
class SharedStorage:
    kv: KVStore
    jobs: JobQueue
    inner: Storage

    async def close(self) -> None:
        await self.inner.close()


async def open_shared(config: SharedConfig, data_dir: Path) -> SharedStorage:
    inner = await open_storage(SQLiteStorageConfig(path=config.database), data_dir)
    return SharedStorage(NamespacedKV(inner.kv, config.namespace), inner.jobs, inner)


def test_a_plugin_storage_backend_keeps_what_routers_store(tmp_path: Path) -> None:
    plugin = types.ModuleType("shared_storage")
    plugin.register_storage_backends = lamina.hookimpl(  # type: ignore[attr-defined]
        lambda: [lamina.StorageBackendSpec(type="shared", config=SharedConfig, create=open_shared)]
    )
    pm = make_plugin_manager()
    pm.register(plugin, "shared_storage")
    database = tmp_path / "shared.db"

    def config(**storage_config: str) -> dict[str, Any]:
        return {
            "storage": {"dir": str(tmp_path / "data"), "type": "shared", "config": storage_config},
            "providers": {"inference": [{"id": "echo", "type": "inline::echo"}]},
        }

    with serve(config(database=str(database), namespace="team-a"), pm=pm) as url:
        alias = {"id": "chat", "provider_id": "echo", "provider_model_id": "echo-1"}
        assert requests.post(f"{url}/models", json=alias, timeout=10).status_code == 200
    with sqlite3.connect(database) as db:
        assert [key for (key,) in db.execute("SELECT key FROM kv")] == ["team-a/models/chat"]
    with serve(config(database=str(database), namespace="team-a"), pm=pm) as url:
        assert requests.get(f"{url}/models/chat", timeout=10).json()["provider_model_id"] == "echo-1"
    with serve(config(database=str(database), namespace="team-b"), pm=pm) as url:
        assert requests.get(f"{url}/models/chat", timeout=10).status_code == 404
    with pytest.raises(ConfigError, match=r"storage\.config\.namespace"), serve(config(database="x.db"), pm=pm):
        pass
