"""remote::openai in front of llama.cpp's `llama-server` serving SmolLM2-135M-Instruct, replayed from
recordings/remote_openai_llamacpp.json (lamina.recording), so CI runs it with no llama.cpp and no model.

To re-record (greedy decoding and a fixed seed, so a re-recording differs only where llama.cpp or the model did):

    LAMINA_RECORDING=record LAMINA_LLAMA_SERVER=/path/to/llama-server \\
        LAMINA_TEST_SMOLLM2=/path/to/SmolLM2-135M-Instruct.Q4_1.gguf \\
        pytest tests/conformance/test_conformance_llamacpp.py

which starts llama-server on 127.0.0.1 for the length of the run; or point LAMINA_RECORDING_UPSTREAM at a
llama-server already running (its root, without /v1) serving the model as `SmolLM2-135M-Instruct` (`--alias`).
`LAMINA_RECORDING=live` runs the suite against it and writes nothing. recordings/README.md says more.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from lamina.conformance import InferenceConformance, Target
from lamina.recording import Recorder
from lamina.testing import serve

RECORDING = Path(__file__).parent / "recordings" / "remote_openai_llamacpp.json"
MODE = os.environ.get("LAMINA_RECORDING", "replay")
MODEL = "SmolLM2-135M-Instruct"  # as llama-server serves it (--alias)
SEED = 7
START_TIMEOUT_SECONDS = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def llama_server_command(binary: str, gguf: str, port: int) -> list[str]:
    """How the recordings were made: one slot, greedy sampling when asked (temperature 0), a fixed seed."""
    return [
        binary, "--model", gguf, "--alias", MODEL, "--host", "127.0.0.1", "--port", str(port),
        "--jinja", "--ctx-size", "2048", "--parallel", "1", "--seed", str(SEED), "--threads", "2",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str | None]:
    """The upstream's root URL: none when replaying, else LAMINA_RECORDING_UPSTREAM or a llama-server started here."""
    if MODE == "replay":
        yield None
        return
    if upstream := os.environ.get("LAMINA_RECORDING_UPSTREAM"):
        yield upstream.rstrip("/").removesuffix("/v1")
        return
    binary, gguf = os.environ.get("LAMINA_LLAMA_SERVER"), os.environ.get("LAMINA_TEST_SMOLLM2")
    if not binary or not gguf:
        pytest.fail(
            f"LAMINA_RECORDING={MODE} needs an upstream: LAMINA_RECORDING_UPSTREAM=<a running llama-server>, or "
            "LAMINA_LLAMA_SERVER=<path to llama-server> and LAMINA_TEST_SMOLLM2=<SmolLM2 GGUF> to start one"
        )
    port = free_port()
    process = subprocess.Popen(
        llama_server_command(binary, gguf, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            assert process.poll() is None, f"llama-server exited with {process.returncode}"
            try:
                with urllib.request.urlopen(f"{root}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "llama-server did not become healthy"
            time.sleep(0.5)
        yield root
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def target(llama_server: str | None) -> Iterator[Target]:
    with Recorder(RECORDING, upstream=llama_server) as recorder:
        config = {"base_url": f"{recorder.url}/v1", "models": [MODEL], "max_retries": 0}
        provider = {"id": "llamacpp", "type": "remote::openai", "config": config}
        with serve({"providers": {"inference": [provider]}}) as base_url:
            # No tool calls: SmolLM2's chat template has no tools, so llama-server neither offers them to the model
            # nor constrains its output to a call (it answered `tool_choice: required` with text when recorded).
            yield Target(base_url=base_url, model=f"llamacpp/{MODEL}", tools=False)


class TestRemoteOpenAIOnLlamaCpp(InferenceConformance):
    pass
