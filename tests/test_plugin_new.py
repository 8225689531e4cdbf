"""`lamina plugin new`: every kind of package it writes installs, shows in `lamina providers` and passes its own
generated tests against a real server. Installed with `pip --target` into a folder of the test's own, found
through PYTHONPATH (entry points are read from the dist-info there), so the shared test venv is left alone."""

from __future__ import annotations

import inspect
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


def protocol_is_current(api: str) -> bool:
    """Whether the installed core has the provider protocol the template of `api` implements: the files and
    vector_io templates follow those APIs' redesigned protocols (bytes-only files providers; vector_io's `Chunk`
    and single `query`), which reach this branch when those branches merge."""
    if api == "files":
        from lamina.apis.files.provider import FilesProvider

        return "file_id" in inspect.signature(FilesProvider.finish_upload).parameters
    if api == "vector_io":
        import lamina.apis.vector_io.provider as vector_io

        return hasattr(vector_io, "Chunk")
    return True


@pytest.mark.slow
@pytest.mark.parametrize("api", sorted(KINDS))
def test_each_kind_installs_lists_and_passes_its_own_tests(tmp_path: Path, api: str) -> None:
    if not protocol_is_current(api):
        pytest.skip(f"the installed core has the {api} provider protocol from before its redesign")
    name = f"acme-{api.replace('_', '-')}"
    run(LAMINA, "plugin", "new", name, "--api", api, "--dir", tmp_path)
    folder, site = tmp_path / f"lamina-{name}", tmp_path / "site"
    run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, folder)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "LAMINA_HOME": str(tmp_path / "home")}
    providers = [line.split() for line in run(LAMINA, "providers", env=env).splitlines()]
    assert [api, f"inline::{name}", f"lamina-{name}", "0.1.0"] in providers, providers
    # From the temporary folder: the generated tests must not lean on this repository's conftest or settings.
    out = run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", folder / "tests", env=env, cwd=tmp_path)
    assert " passed" in out and "skipped" not in out and "failed" not in out, out


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
