"""The `lamina` command, run as a subprocess the way users run it."""

from __future__ import annotations

import os
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


def test_distros(env: dict[str, str]) -> None:
    lines = lamina("distros", env=env).stdout.splitlines()
    starter = [line.split() for line in lines if line.startswith("starter ")]
    assert starter and starter[0][1:3] == ["lamina-distro-starter", "0.1.0"]


def test_providers(env: dict[str, str]) -> None:
    rows = [line.split() for line in lamina("providers", env=env).stdout.splitlines()]
    assert ["inference", "remote::openai", "lamina-remote-openai", "0.1.0"] in rows


def test_apis(env: dict[str, str]) -> None:
    names = [line.split()[0] for line in lamina("apis", env=env).stdout.splitlines()]
    assert "inference" in names and names == sorted(names)


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
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert (tmp_path / "data" / "kvstore.db").exists()
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
