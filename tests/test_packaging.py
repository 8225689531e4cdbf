"""Every first-party package moves in lockstep and declares itself the way core discovers plugins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core" / "pyproject.toml"
PLUGINS = sorted(ROOT.glob("plugins/*/pyproject.toml"))
DISTROS = sorted(ROOT.glob("distros/*/pyproject.toml"))
CORE_RANGE = "lamina-stack>=0.1,<0.2"


def project(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())["project"]


def first_party(requirement: str) -> str | None:
    name = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert name, requirement
    normalized = re.sub(r"[-_.]+", "-", name.group(1)).lower()
    return normalized if normalized.startswith("lamina-") else None


def test_packages_found() -> None:
    assert CORE.exists() and PLUGINS and DISTROS
    assert any(p.parent.name == "remote-openai" for p in PLUGINS)
    assert any(p.parent.name == "starter" for p in DISTROS)


def test_all_versions_in_lockstep() -> None:
    versions = {str(path.relative_to(ROOT)): project(path)["version"] for path in [CORE, *PLUGINS, *DISTROS]}
    assert len(set(versions.values())) == 1, versions


@pytest.mark.parametrize("path", PLUGINS, ids=lambda p: p.parent.name)
def test_plugin_depends_on_core_range(path: Path) -> None:
    dependencies = [d.replace(" ", "") for d in project(path).get("dependencies", [])]
    assert CORE_RANGE in dependencies, dependencies
    assert not [d for d in dependencies if first_party(d) == "lamina-stack" and d != CORE_RANGE]


@pytest.mark.parametrize("path", DISTROS, ids=lambda p: p.parent.name)
def test_distro_pins_first_party_exactly(path: Path) -> None:
    version = project(CORE)["version"]
    pinned = [d.replace(" ", "") for d in project(path).get("dependencies", []) if first_party(d)]
    assert any(first_party(d) == "lamina-stack" for d in pinned), pinned
    for requirement in pinned:
        assert requirement == f"{first_party(requirement)}=={version}", f"{path}: {requirement} is not pinned with =="


@pytest.mark.parametrize("path", PLUGINS + DISTROS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_entry_point_module_exists(path: Path) -> None:
    entry_points = project(path).get("entry-points", {}).get("lamina", {})
    assert entry_points, f"{path} declares no entry point in the `lamina` group"
    for name, target in entry_points.items():
        module = target.partition(":")[0]
        parts = module.split(".")
        candidates = [path.parent.joinpath(*parts, "__init__.py"), path.parent.joinpath(*parts[:-1], f"{parts[-1]}.py")]
        assert any(c.is_file() for c in candidates), f"{path}: entry point {name} = {target}: no module at {candidates}"


def test_example_plugin_is_shaped_like_a_third_party_one() -> None:
    example = project(ROOT / "tests" / "plugins" / "lamina-example" / "pyproject.toml")
    assert (example["name"], example["version"]) == ("lamina-example", "0.1.0")
    assert example["dependencies"] == [CORE_RANGE]
    assert example["entry-points"]["lamina"] == {"example": "lamina_example"}
    assert (ROOT / "tests" / "plugins" / "lamina-example" / "lamina_example.py").is_file()
