"""`lamina plugin new`: every kind of package it writes installs, shows in `lamina providers` and passes its own
generated tests against a real server. Installed with `pip --target` into a folder of the test's own, found
through PYTHONPATH (entry points are read from the dist-info there), so the shared test venv is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from lamina.cli import cli
from lamina.scaffold import KINDS

LAMINA = Path(sys.executable).parent / "lamina"


def run(*command: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_every_kind_installs_lists_and_passes_its_own_tests(tmp_path: Path) -> None:
    packages = {}
    for api in KINDS:
        name = f"acme-{api.replace('_', '-')}"
        run(LAMINA, "plugin", "new", name, "--api", api, "--dir", tmp_path)
        packages[api] = (name, tmp_path / f"lamina-{name}")
    site = tmp_path / "site"
    run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site,
        *(folder for _, folder in packages.values()))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site), "LAMINA_HOME": str(tmp_path / "home")}
    providers = [line.split() for line in run(LAMINA, "providers", env=env).splitlines()]
    for api, (name, _) in packages.items():
        assert [api, f"inline::{name}", f"lamina-{name}", "0.1.0"] in providers, providers
    tests = [folder / "tests" for _, folder in packages.values()]
    # From the temporary folder: the generated tests must not lean on this repository's conftest or settings.
    out = run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *tests, env=env, cwd=tmp_path)
    assert " passed" in out and "skipped" not in out, out


def test_writes_the_package_layout(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["plugin", "new", "lamina-my-shield", "--api", "safety", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "lamina-my-shield"
    written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert written == [
        "README.md",
        "lamina_my_shield/__init__.py",
        "lamina_my_shield/provider.py",
        "pyproject.toml",
        "tests/test_my_shield.py",
    ]
    pyproject = (folder / "pyproject.toml").read_text()
    assert 'my-shield = "lamina_my_shield"' in pyproject and 'name = "lamina-my-shield"' in pyproject
    assert "$" not in "".join((folder / name).read_text() for name in written)  # every placeholder was filled


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad_Name", "--api", "inference"], "not a plugin name"),
        (["fine", "--api", "telepathy"], "Invalid value for '--api'"),
    ],
)
def test_refuses_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["plugin", "new", *args, "--dir", str(tmp_path)])
    assert result.exit_code != 0 and message in result.output
    assert not list(tmp_path.iterdir())


def test_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "lamina-taken").mkdir()
    (tmp_path / "lamina-taken" / "keep.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["plugin", "new", "taken", "--api", "inference", "--dir", str(tmp_path)])
    assert result.exit_code != 0 and "already exists" in result.output
    assert [p.name for p in (tmp_path / "lamina-taken").iterdir()] == ["keep.txt"]
