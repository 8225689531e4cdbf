"""Every first-party package moves in lockstep, declares itself the way core discovers plugins, and declares
what its own code imports."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core" / "pyproject.toml"
PLUGINS = sorted(ROOT.glob("plugins/*/pyproject.toml"))
DISTROS = sorted(ROOT.glob("distros/*/pyproject.toml"))
EXAMPLE = ROOT / "tests" / "plugins" / "lamina-example" / "pyproject.toml"
CORE_RANGE = "lamina-stack>=0.1,<0.2"


def project(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())["project"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def applies_here(requirement: str) -> bool:
    """False for a requirement of another environment (`hnswlib; python_version >= '3.13'`): not installed here."""
    marker = Requirement(requirement).marker
    return marker is None or marker.evaluate()


def requirement_name(requirement: str) -> str:
    name = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert name, requirement
    return normalize(name.group(1))


def first_party(requirement: str) -> str | None:
    normalized = requirement_name(requirement)
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


@pytest.mark.parametrize("path", [CORE, *PLUGINS, *DISTROS, EXAMPLE], ids=lambda p: p.parent.name)
def test_nothing_requires_pypis_unrelated_lamina_core(path: Path) -> None:
    metadata = project(path)
    extras = [r for requirements in metadata.get("optional-dependencies", {}).values() for r in requirements]
    requirements = [*metadata.get("dependencies", []), *extras]
    assert "lamina-core" not in {requirement_name(r) for r in requirements}
    assert metadata["name"] != "lamina-core"


@pytest.mark.parametrize("path", DISTROS, ids=lambda p: p.parent.name)
def test_distro_pins_first_party_exactly(path: Path) -> None:
    version = project(CORE)["version"]
    pinned = [d.replace(" ", "") for d in project(path).get("dependencies", []) if first_party(d)]
    assert any(first_party(d) == "lamina-stack" for d in pinned), pinned
    for requirement in pinned:
        without_extras = re.sub(r"\[[^]]*\]", "", requirement)
        assert without_extras == f"{first_party(requirement)}=={version}", (
            f"{path}: {requirement} is not pinned with =="
        )


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
    example = project(EXAMPLE)
    assert (example["name"], example["version"]) == ("lamina-example", "0.1.0")
    assert example["dependencies"] == [CORE_RANGE, "pydantic>=2.6,<3"]
    assert example["entry-points"]["lamina"] == {"example": "lamina_example"}
    assert (ROOT / "tests" / "plugins" / "lamina-example" / "lamina_example.py").is_file()


# --- every package declares what its own code imports ----------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in {"ImportError", "ModuleNotFoundError"} for t in caught)


def scan_imports(source: str) -> Iterator[tuple[str, bool, int]]:
    """(top-level module, optional, line) of each absolute import; `optional` when a `try` around it catches
    ImportError. Imports under `if TYPE_CHECKING:` never run, so they are skipped; imports inside functions count."""

    def visit(node: ast.AST, optional: bool) -> Iterator[tuple[str, bool, int]]:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from visit(child, optional)
            return
        if isinstance(node, ast.Try | ast.TryStar):
            guarded = optional or any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                yield from visit(child, guarded)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                yield from visit(child, optional)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.partition(".")[0], optional, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0], optional, node.lineno
        for child in ast.iter_child_nodes(node):
            yield from visit(child, optional)

    yield from visit(ast.parse(source), False)


def package_sources(pyproject: Path) -> list[Path]:
    """The modules a package ships: its Python files, without its own tests."""
    root = pyproject.parent
    return sorted(p for p in root.rglob("*.py") if not {"tests", "build", "dist"} & set(p.relative_to(root).parts))


def top_level_modules(pyproject: Path) -> set[str]:
    return {p.relative_to(pyproject.parent).parts[0].removesuffix(".py") for p in package_sources(pyproject)}


PACKAGES = [CORE, *PLUGINS, *DISTROS, EXAMPLE]
# Our own packages are mapped from the checkout, since editable installs do not record their modules.
FIRST_PARTY_MODULES = {module: normalize(project(p)["name"]) for p in PACKAGES for module in top_level_modules(p)}


@functools.cache
def installed_modules() -> dict[str, list[str]]:
    return packages_distributions()


def distributions_of(module: str) -> set[str]:
    if module in FIRST_PARTY_MODULES:
        return {FIRST_PARTY_MODULES[module]}
    # A module that is not installed here is assumed to come from the distribution of the same name.
    return {normalize(d) for d in installed_modules().get(module, [module])}


def undeclared_imports(pyproject: Path) -> list[str]:
    metadata = project(pyproject)
    required = {requirement_name(r) for r in metadata.get("dependencies", [])}
    extras = {requirement_name(r) for rs in metadata.get("optional-dependencies", {}).values() for r in rs}
    own = top_level_modules(pyproject)
    problems = []
    for path in package_sources(pyproject):
        for module, optional, line in scan_imports(path.read_text()):
            if module in sys.stdlib_module_names or module in own:
                continue
            where = f"{path.relative_to(ROOT)}:{line}: {module}"
            dists = distributions_of(module)
            if optional and not dists & extras:
                problems.append(f"{where} is imported optionally but none of {sorted(dists)} is in an optional extra")
            elif not optional and not dists & required:
                problems.append(f"{where} is imported but none of {sorted(dists)} is in the dependencies")
    return problems


def test_import_scanner() -> None:
    source = """
from __future__ import annotations
import os.path, yaml
from typing import TYPE_CHECKING
from . import sibling
if TYPE_CHECKING:
    import click
else:
    import orjson
try:
    import uvloop
except (ModuleNotFoundError, OSError):
    pass
try:
    import numpy
except ValueError:
    pass
def later():
    from pypdf.errors import PyPdfError
"""
    assert sorted(scan_imports(source)) == [
        ("__future__", False, 2),
        ("numpy", False, 15),
        ("orjson", False, 9),
        ("os", False, 3),
        ("pypdf", False, 19),
        ("typing", False, 4),
        ("uvloop", True, 11),
        ("yaml", False, 3),
    ]


def test_import_audit_maps_modules_to_distributions() -> None:
    assert distributions_of("yaml") == {"pyyaml"}  # a module named unlike its distribution
    assert distributions_of("lamina") == {"lamina-stack"}
    assert FIRST_PARTY_MODULES["lamina_example"] == "lamina-example"


@pytest.mark.parametrize("path", PACKAGES, ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_package_declares_what_it_imports(path: Path) -> None:
    assert package_sources(path), f"{path}: no modules found"
    problems = undeclared_imports(path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", PACKAGES, ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_package_imports_its_third_party_dependencies(path: Path) -> None:
    """A dependency nothing imports is dead weight for every install (first-party ones are how distros work)."""
    imported: set[str] = set()
    for source in package_sources(path):
        for module, _, _ in scan_imports(source.read_text()):
            imported |= distributions_of(module)
    metadata = project(path)
    extras = [r for requirements in metadata.get("optional-dependencies", {}).values() for r in requirements]
    declared = [*metadata.get("dependencies", []), *extras]
    unused = [r for r in declared if applies_here(r) and not first_party(r) and requirement_name(r) not in imported]
    assert not unused, f"{path}: declared but never imported: {unused}"


# --- a third-party plugin installs against our core, never PyPI's lamina-core ---------------------------------

DEPS_CACHE = Path(os.environ.get("LAMINA_TEST_HOME", Path.home() / ".cache" / "lamina-test")) / "wheels-deps"


def _run(*command: str | Path, timeout: float = 300) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _third_party_wheels() -> Path:
    """A folder of wheels of everything core, the example plugin and their builds need that is not ours.

    Filled once with `pip download` (the only step that needs PyPI) and kept outside the checkout; a marker
    named after the requirement list makes a changed list fetch again."""
    requirements = sorted(
        {
            r
            for path in (CORE, EXAMPLE)
            for r in [*project(path)["dependencies"], *tomllib.loads(path.read_text())["build-system"]["requires"]]
            if not first_party(r)
        }
    )
    key = hashlib.sha256(json.dumps([sys.implementation.cache_tag, *requirements]).encode()).hexdigest()[:16]
    marker = DEPS_CACHE / f".complete-{key}"
    if not marker.exists():
        command = [sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "-d", str(DEPS_CACHE)]
        result = subprocess.run([*command, *requirements], capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            pytest.skip(
                f"cannot fill {DEPS_CACHE} with core's dependencies (is PyPI reachable?): {result.stderr[-500:]}"
            )
        marker.touch()
    # A lamina-* wheel in this folder would let the install below pick it instead of ours.
    assert not list(DEPS_CACHE.glob("lamina*")), f"{DEPS_CACHE} holds lamina wheels; delete them"
    return DEPS_CACHE


@pytest.mark.slow
def test_a_third_party_plugin_installs_against_our_core(tmp_path: Path) -> None:
    """Build core's wheel, make a fresh venv, `pip install ./tests/plugins/lamina-example` in it: the example
    requires core by its distribution name, like any third-party plugin, and must get our core.

    The install runs with `--no-index`: pip sees only our wheel folder and a cache of third-party wheels
    (`_third_party_wheels`), so it cannot fall back to PyPI (where `lamina-core` is an unrelated project), and after
    the cache is filled once the test needs no network. A fresh venv rather than `--system-site-packages` so the
    development install cannot satisfy `lamina-stack` in its place."""
    deps = _third_party_wheels()
    ours = tmp_path / "wheels"
    offline = ("--no-index", "--find-links", ours, "--find-links", deps)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *offline, "-w", ours, ROOT / "core")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python, lamina_command = venv / "bin" / "python", venv / "bin" / "lamina"
    _run(python, "-m", "pip", "install", "--quiet", *offline, ROOT / "tests" / "plugins" / "lamina-example")

    installed = {p["name"]: p["version"] for p in json.loads(_run(python, "-m", "pip", "list", "--format=json"))}
    assert installed.get("lamina-stack") == project(CORE)["version"], installed
    assert installed.get("lamina-example") == project(EXAMPLE)["version"], installed
    assert "lamina-core" not in installed, installed
    # The `lamina` package that got imported is the one in our wheel: same source as this checkout.
    where = _run(python, "-c", "import lamina.hookspecs; print(lamina.hookspecs.__file__)").strip()
    assert Path(where).is_relative_to(venv), where
    assert Path(where).read_text() == (ROOT / "core" / "lamina" / "hookspecs.py").read_text()
    providers = _run(lamina_command, "providers")
    assert re.search(r"^inference\s+inline::echo\s+lamina-example\s+0\.1\.0$", providers, re.MULTILINE), providers
