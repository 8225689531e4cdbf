"""Loading plugins from the `lamina` entry-point group: a broken plugin is left out and reported in one line,
the allow- and deny-lists apply before import, and the CLI and server keep working.

Each test plugin is a real installed distribution as importlib.metadata sees one: a module plus a
`<name>-<version>.dist-info` folder (METADATA, entry_points.txt) in a folder on the path, which is what pip leaves
in site-packages. CLI tests put that folder on the PYTHONPATH of a `lamina` subprocess; in-process tests prepend
it to sys.path, with a module name of their own so no two tests share an imported module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from lamina import __version__
from lamina.client import LibraryClient
from lamina.config import ConfigError
from lamina.plugins import list_plugins, make_plugin_manager, provider_specs
from lamina.testing import serve

LAMINA = [sys.executable, "-c", "from lamina.cli import main; main()"]
VERSION = "0.3.1"  # not the lockstep version, so a message that names it names the test plugin's


def install(site: Path, dist: str, source: str, *, version: str = VERSION) -> str:
    """Install a one-module plugin distribution `dist` into `site`; returns its module name."""
    module = dist.replace("-", "_")
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[lamina]\n{dist.removeprefix('lamina-')} = {module}\n")
    return module


BROKEN = {
    "raises": ("raise RuntimeError('the plugin is broken')\n", "RuntimeError: the plugin is broken"),
    "missing-dependency": (
        "import lamina_no_such_dependency\n",
        "ModuleNotFoundError: No module named 'lamina_no_such_dependency'",
    ),
    "misspelt-hook": (
        """
        import lamina

        @lamina.hookimpl
        def register_provider():
            return []
        """,
        "PluginValidationError: unknown hook 'register_provider' (did you mean register_providers?)",
    ),
    "wrong-argument": (
        """
        import lamina

        @lamina.hookimpl
        def register_commands(group):
            pass
        """,
        "PluginValidationError: Plugin 'broken' for hook 'register_commands'; "
        "hookimpl definition: register_commands(group); "
        "Argument(s) {'group'} are declared in the hookimpl but can not be found in the hookspec",
    ),
}

GREETING = """
import click
import lamina

@lamina.hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("name")
    def greet(name):
        \"\"\"Say hello.\"\"\"
        click.echo(f"hello, {name}")
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    return folder


@pytest.fixture
def env(tmp_path: Path, site: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LAMINA_", "OPENAI_"))}
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**clean, "PYTHONPATH": path, "LAMINA_HOME": str(tmp_path / "home")}


def lamina(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*LAMINA, *args], capture_output=True, text=True, timeout=60, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def only_line_with(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if needle in line]
    assert len(lines) == 1, text
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def remote_config(tmp_path: Path, provider_type: str = "remote::openai") -> Path:
    """A run.yaml whose one provider points at a closed port: enough to start and answer /v1/health."""
    run_yaml = tmp_path / "run.yaml"
    config = {"base_url": "http://127.0.0.1:9/v1", "models": ["m"]} if provider_type == "remote::openai" else {}
    run_yaml.write_text(
        yaml.safe_dump(
            {
                "distro": "loading-test",
                "storage": {"dir": str(tmp_path / "data")},
                "providers": {"inference": [{"id": "up", "type": provider_type, "config": config}]},
            }
        )
    )
    return run_yaml


@pytest.fixture
def running(env: dict[str, str]) -> Iterator[Any]:
    """Start `lamina run ...`; yields a function that starts it and returns (process, base URL) once healthy."""
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
        port = free_port()
        process = subprocess.Popen(
            [*LAMINA, "run", *args, "--port", str(port)],
            env={**env, **(extra_env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    return process, url
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /v1/health within 30s"
            time.sleep(0.1)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    return stderr


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_and_everything_else_works(
    kind: str, site: Path, env: dict[str, str], tmp_path: Path, running: Any
) -> None:
    source, error = BROKEN[kind]
    install(site, "lamina-broken", source)
    install(site, "lamina-greeting", GREETING)
    message = f"plugin lamina-broken {VERSION} failed to load: {error}"

    for args in (["--version"], ["--help"], ["plugins"], ["plugins", "--json"], ["greet", "you"]):
        result = lamina(*args, env=env)
        assert only_line_with(result.stderr, "failed to load").split(" ", 2)[2] == f"WARNING lamina.plugins: {message}"
        assert "Traceback" not in result.stderr
    assert lamina("--version", env=env).stdout.strip() == f"lamina, version {__version__}"
    assert "greet" in lamina("--help", env=env).stdout  # the healthy plugin's command is still there
    assert lamina("greet", "you", env=env).stdout == "hello, you\n"

    table = lamina("plugins", env=env).stdout
    assert only_line_with(table, "lamina-broken").split()[:4] == ["broken", "lamina-broken", VERSION, "broken"]
    rows = json.loads(lamina("plugins", "--json", env=env).stdout)
    broken = [row for row in rows if row["package"] == "lamina-broken"]
    assert broken == [
        {
            "name": "broken",
            "package": "lamina-broken",
            "version": VERSION,
            "hooks": [],
            "status": "broken",
            "error": error,
        }
    ]
    greeting = next(row for row in rows if row["package"] == "lamina-greeting")
    assert (greeting["status"], greeting["hooks"], greeting["error"]) == ("ok", ["register_commands"], None)

    process, url = running(str(remote_config(tmp_path)))
    assert requests.get(f"{url}/providers/up", timeout=5).json()["package"] == "lamina-remote-openai"
    stderr = stop(process)
    assert only_line_with(stderr, "failed to load").split(" ", 2)[2] == f"WARNING lamina.plugins: {message}"  # once
    assert "Traceback" not in stderr


def test_the_allow_list_applies_before_import(site: Path, env: dict[str, str]) -> None:
    install(site, "lamina-broken", BROKEN["raises"][0])
    install(site, "lamina-greeting", GREETING)
    result = lamina("plugins", "--json", env={**env, "LAMINA_PLUGINS": "lamina_greeting"})  # any spelling pip accepts
    assert result.stderr == ""  # the broken plugin was never imported, so there is nothing to warn about
    assert {row["package"] for row in json.loads(result.stdout)} == {"lamina-stack", "lamina-greeting"}

    result = lamina("plugins", "--json", env={**env, "LAMINA_PLUGINS": ""})
    assert result.stderr == ""
    assert {row["name"] for row in json.loads(result.stdout)} == {
        "lamina.apis",
        "lamina.sources",
        "lamina.storage.sqlite",
        "lamina.keys",
    }


def test_the_deny_list_applies_before_import(site: Path, env: dict[str, str]) -> None:
    install(site, "lamina-broken", BROKEN["missing-dependency"][0])
    install(site, "lamina-greeting", GREETING)
    result = lamina("plugins", "--json", env={**env, "LAMINA_DISABLE_PLUGINS": "lamina-broken, lamina-remote-openai"})
    assert result.stderr == ""
    packages = {row["package"] for row in json.loads(result.stdout)}
    assert "lamina-greeting" in packages and "lamina-example" in packages
    assert not packages & {"lamina-broken", "lamina-remote-openai"}


def test_unknown_names_in_either_list_are_warned_about(site: Path, env: dict[str, str]) -> None:
    install(site, "lamina-greeting", GREETING)
    result = lamina(
        "plugins",
        "--json",
        env={**env, "LAMINA_PLUGINS": "lamina-greeting,lamina-nope", "LAMINA_DISABLE_PLUGINS": "lamina-gone"},
    )
    allowed = only_line_with(result.stderr, "LAMINA_PLUGINS names")
    assert "lamina-nope" in allowed and "lamina-greeting" in allowed.partition("installed:")[2]
    assert "lamina-gone" in only_line_with(result.stderr, "LAMINA_DISABLE_PLUGINS names")
    assert {row["package"] for row in json.loads(result.stdout)} == {"lamina-stack", "lamina-greeting"}


def test_trace_prints_hook_calls(site: Path, env: dict[str, str]) -> None:
    install(site, "lamina-greeting", GREETING)
    assert "register_commands" not in lamina("greet", "x", env=env).stderr
    traced = lamina("providers", env={**env, "LAMINA_TRACE_PLUGINS": "1"}).stderr
    assert "register_commands [hook]" in traced and "register_providers [hook]" in traced


def test_a_provider_type_from_a_broken_plugin_fails_run_in_one_line(
    site: Path, env: dict[str, str], tmp_path: Path
) -> None:
    install(site, "lamina-parrot", "raise RuntimeError('parrot is broken')\n")
    result = lamina("run", str(remote_config(tmp_path, "inline::parrot")), env=env, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"Error: {tmp_path / 'run.yaml'}: provider 'up' has type 'inline::parrot', and the plugin that provides it, "
        f"lamina-parrot {VERSION}, failed to load: RuntimeError: parrot is broken"
    )
    # A type no broken plugin looks like still gets the general message.
    result = lamina("run", str(remote_config(tmp_path, "inline::macaw")), env=env, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "'inline::macaw', which no installed plugin provides" in result.stderr.splitlines()[-1]


# --- in process: make_plugin_manager() finds the same distributions once their folder is on sys.path ----------


@pytest.fixture
def on_path(site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in ("LAMINA_PLUGINS", "LAMINA_DISABLE_PLUGINS", "LAMINA_TRACE_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.syspath_prepend(str(site))
    return site


def unique(request: pytest.FixtureRequest, stem: str) -> str:
    # Imported modules outlive a test; a name per test keeps one test's plugin out of the next. The stem comes
    # last, where matching a provider type to a distribution looks.
    return f"lamina-t{zlib.crc32(request.node.nodeid.encode())}-{stem}"


def test_the_manager_records_what_failed_and_keeps_the_rest(
    on_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    broken = unique(request, "broken")
    install(on_path, broken, BROKEN["misspelt-hook"][0])
    echo = unique(request, "echo")
    install(
        on_path,
        echo,
        """
        import lamina
        from pydantic import BaseModel

        async def create(config, deps):
            return object()

        @lamina.hookimpl
        def register_providers():
            return [lamina.ProviderSpec(api="inference", type="inline::loading-test", config=BaseModel, create=create)]
        """,
        version="2.0",
    )
    pm = make_plugin_manager()
    [record] = [r for r in caplog.records if r.name == "lamina.plugins"]
    assert record.levelname == "WARNING" and record.getMessage() == (
        f"plugin {broken} {VERSION} failed to load: {BROKEN['misspelt-hook'][1]}"
    )
    assert [(b.package, b.version) for b in pm.broken] == [(broken, VERSION)]
    spec = provider_specs(pm)["inline::loading-test"]
    assert (spec.package, spec.version) == (echo, "2.0")  # attributed to its distribution, not to lamina-stack
    rows = {row["package"]: row for row in list_plugins(pm)}
    assert rows[broken]["status"] == "broken" and rows[echo]["status"] == "ok"


def test_a_plugin_whose_hook_raises_is_dropped_alone(
    on_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    failing = unique(request, "failing")
    install(
        on_path,
        failing,
        """
        import lamina

        @lamina.hookimpl
        def register_providers():
            raise KeyError("no such table")
        """,
    )
    pm = make_plugin_manager()
    assert "remote::openai" in provider_specs(pm)
    assert [b.error for b in pm.broken] == ["KeyError: 'no such table'"]
    assert pm.get_plugin(failing.removeprefix("lamina-")) is None  # not called again by the next hook
    assert f"plugin {failing} {VERSION} failed to load: KeyError" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_plugin_whose_hook_answers_with_the_wrong_kind_is_dropped_alone(
    on_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    confused = unique(request, "confused")
    install(
        on_path,
        confused,
        """
        import lamina

        @lamina.hookimpl
        def register_providers():
            return [{"api": "inference", "type": "inline::a-dict-not-a-spec"}]
        """,
    )
    pm = make_plugin_manager()
    specs = provider_specs(pm)
    assert "remote::openai" in specs and "inline::a-dict-not-a-spec" not in specs
    assert [b.error for b in pm.broken] == ["TypeError: register_providers returned dict, not ProviderSpec"]
    assert f"plugin {confused} {VERSION} failed to load: TypeError" in caplog.text


ASGI_WRAPPER_AND_DISTRO = """
from pathlib import Path

import lamina


def add_header(app):
    async def wrapped(scope, receive, send):
        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-loading-test", b"wrapped")]
            await send(message)

        await app(scope, receive, send_with_header)

    return wrapped


@lamina.hookimpl
def asgi_wrapper(stack):
    return add_header


@lamina.hookimpl
def register_distros():
    return [lamina.DistroSpec(name="DISTRO", run_config=Path(__file__).with_name("DISTRO.yaml"))]
"""


def test_asgi_wrapper_and_a_distro_by_name_through_testing_serve(on_path: Path, request: pytest.FixtureRequest) -> None:
    dist = unique(request, "wrapper")
    distro = dist.removeprefix("lamina-")
    install(on_path, dist, ASGI_WRAPPER_AND_DISTRO.replace("DISTRO", distro))
    upstream = {"base_url": "http://127.0.0.1:9/v1", "models": ["m"]}
    (on_path / f"{distro}.yaml").write_text(  # no storage.dir: testing.serve gives it a temporary one
        yaml.safe_dump({"providers": {"inference": [{"id": "up", "type": "remote::openai", "config": upstream}]}})
    )
    pm = make_plugin_manager()
    with serve(distro, pm=pm) as url:
        response = requests.get(f"{url}/health", timeout=5)
        assert response.status_code == 200 and response.headers["x-loading-test"] == "wrapped"
        assert requests.get(f"{url}/providers/up", timeout=5).json()["provider_type"] == "remote::openai"


async def test_library_client_and_testing_serve_name_the_broken_plugin(
    on_path: Path, request: pytest.FixtureRequest
) -> None:
    dist = unique(request, "cockatoo")
    install(on_path, dist, "import lamina_no_such_dependency\n")
    pm = make_plugin_manager()
    config = {"providers": {"inference": [{"id": "c", "type": "inline::cockatoo", "config": {}}]}}
    expected = f"the plugin that provides it, {dist} {VERSION}, failed to load: ModuleNotFoundError"
    with pytest.raises(ConfigError, match=expected):
        async with LibraryClient(config, pm=pm):
            pass
    with pytest.raises(ConfigError, match=expected), serve(config, pm=pm):
        pass
