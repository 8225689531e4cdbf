"""A provider that fails inside a request: the client gets an OpenAI-shaped 500 naming the provider's id, type and
package, and the server log holds one record of it (with its traceback), not two.

The provider is a third-party plugin installed the way pip would (a module and its dist-info on the path), served by
a real `lamina run` process whose stderr the test reads.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

FAULTY = """
import lamina
from lamina.apis.inference.provider import chat_chunk
from lamina.apis.inference.types import ModelInfo


class Faulty:
    async def list_models(self):
        return [ModelInfo(id=name) for name in ("raises", "malformed", "breaks-mid-stream")]

    async def chat_completion(self, request):
        if request.model == "raises":
            raise RuntimeError("kaboom: the engine fell over")
        if request.model == "malformed":
            return ["not", "an", "answer"]
        return self._stream(request.model)

    async def _stream(self, model):
        yield chat_chunk("c1", model, 0, [{"index": 0, "delta": {"content": "hello"}, "finish_reason": None}])
        raise ValueError("kaboom: lost the thread")

    async def completion(self, request):
        raise lamina.bad_request("no completions here", param="model")

    async def embeddings(self, request):
        return {"object": "list", "data": "not a list"}


class FaultyConfig(lamina.ProviderConfig):
    pass


async def create(config, deps):
    return Faulty()


@lamina.hookimpl
def register_providers():
    return [lamina.ProviderSpec(api="inference", type="inline::faulty", config=FaultyConfig, create=create)]
"""

RUN_YAML = """
providers:
  inference:
    - {id: boom, type: inline::faulty}
"""
LAMINA = [sys.executable, "-c", "from lamina.cli import main; main()"]
LABEL = "provider 'boom' (inline::faulty from lamina-faulty 2.0.1)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("faulty")
    site = root / "site"
    site.mkdir()
    (site / "lamina_faulty.py").write_text(textwrap.dedent(FAULTY))
    info = site / "lamina_faulty-2.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lamina-faulty\nVersion: 2.0.1\n")
    (info / "entry_points.txt").write_text("[lamina]\nfaulty = lamina_faulty\n")
    (root / "run.yaml").write_text(RUN_YAML + f"storage: {{dir: {root / 'data'}}}\n")
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "PYTHONPATH": str(site), "LAMINA_PLUGINS": "lamina-faulty"}
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*LAMINA, "run", str(root / "run.yaml"), "--port", str(port)],
            env=env,
            stderr=stderr,
            stdout=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(300):
            try:
                requests.get(base + "/health", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.1)
        yield base, log
    finally:
        process.terminate()
        process.wait(15)


def chat(base: str, model: str, stream: bool = False) -> requests.Response:
    body = {"model": f"boom/{model}", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return requests.post(base + "/chat/completions", json=body, timeout=30)


def records_about(log: Path, needle: str) -> list[str]:
    """Log records that mention `needle`: lines with a level name, not the lines of a traceback."""
    levels = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
    return [line for line in log.read_text().splitlines() if needle in line and levels.search(line)]


def test_a_provider_that_raises_is_a_500_naming_it_and_one_log_record(server: tuple[str, Path]) -> None:
    base, log = server
    response = chat(base, "raises")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "provider_error"
    assert error["message"] == f"{LABEL} failed: RuntimeError: kaboom: the engine fell over"
    time.sleep(0.2)  # the log line is written by the server process
    assert len(records_about(log, "kaboom: the engine fell over")) == 1, log.read_text()
    assert log.read_text().count("Traceback (most recent call last)") == 1


def test_a_malformed_answer_is_a_clear_500_naming_the_provider(server: tuple[str, Path]) -> None:
    base, _ = server
    response = chat(base, "malformed")
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert message.startswith(f"{LABEL} returned neither a dict nor an async iterator")
    assert "list ['not', 'an', 'answer']" in message
    response = requests.post(base + "/embeddings", json={"model": "boom/raises", "input": "x"}, timeout=30)
    assert response.status_code == 500
    assert response.json()["error"]["message"].startswith(f"{LABEL} returned an embeddings answer without")


def test_a_stream_that_breaks_ends_with_an_error_event_naming_the_provider(server: tuple[str, Path]) -> None:
    base, log = server
    response = chat(base, "breaks-mid-stream", stream=True)
    assert response.status_code == 200  # the first chunk went out before the failure
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert '"hello"' in events[0]
    assert f"{LABEL} failed: ValueError: kaboom: lost the thread" in events[-1]
    assert "[DONE]" not in events
    time.sleep(0.2)
    assert len(records_about(log, "kaboom: lost the thread")) == 1, log.read_text()


def test_a_lamina_error_from_a_provider_passes_through_as_is(server: tuple[str, Path]) -> None:
    base, _ = server
    response = requests.post(base + "/completions", json={"model": "boom/raises", "prompt": "x"}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "request_id": response.headers["x-request-id"],
        "message": "no completions here",
        "type": "invalid_request_error",
        "param": "model",
        "code": None,
    }
