"""`lamina run --workers N`: N processes serving one port over shared storage, PostgreSQL (the real server at
127.0.0.1:5432) or SQLite (one data folder; hnswlib indexes kept in step through SQLite). Requests land on every
worker and all see the same state; a worker that dies is replaced; SIGTERM stops them all."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI

LAMINA = Path(sys.executable).parent / "lamina"
START_WAIT_SECONDS = 120.0  # workers starting on a loaded machine
STOP_WAIT_SECONDS = 60.0  # SIGTERM to every worker stopped (their own grace is 30 s)
READS = 60  # file reads, each on a new connection, spread over the workers


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as upstream:
        yield upstream


def write_config(path: Path, fake: FakeOpenAI, storage: dict[str, Any]) -> Path:
    upstream = {
        "base_url": fake.base_url,
        "models": [CHAT_MODEL, EMBEDDING_MODEL],
        "embedding_models": [EMBEDDING_MODEL],
    }
    providers: dict[str, Any] = {"inference": [{"id": "fake", "type": "remote::openai", "config": upstream}]}
    if storage.get("type") == "postgres":
        providers["files"] = [{"id": "files", "type": "remote::postgres"}]
    else:  # one machine: bytes in the data folder, vectors in SQLite + hnswlib
        providers["files"] = [{"id": "files", "type": "inline::localfs"}]
        providers["vector_io"] = [{"id": "vectors", "type": "inline::hnswlib"}]
    config = {
        "storage": {"dir": str(path.parent / "data"), **storage},
        "providers": providers,
        "apis": {"vector_io": {"default_embedding_model": f"fake/{EMBEDDING_MODEL}"}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def log_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def wait_for(condition: Any, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_WAIT_SECONDS
    while not condition():
        tail = "\n".join(log.read_text().splitlines()[-20:])
        assert process.poll() is None, f"lamina run exited with {process.returncode} while waiting for {what}:\n{tail}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}:\n{tail}"
        time.sleep(0.2)


def serving(log: Path) -> tuple[int, list[int]]:
    """The port and pids of the last `N workers serving` line; (0, []) before there is one."""
    found = [re.search(r":(\d+)/v1 \(pids ([\d, ]+)\)", line["message"]) for line in log_lines(log)]
    matches = [match for match in found if match]
    if not matches:
        return 0, []
    return int(matches[-1].group(1)), [int(pid) for pid in matches[-1].group(2).split(", ")]


def worker_pids(log: Path) -> list[int]:
    return serving(log)[1]


@pytest.mark.slow  # two server processes and ~100 requests: tens of seconds on a loaded machine
@pytest.mark.parametrize("storage_type", ["sqlite", "postgres"])
def test_two_workers_share_state_and_stop_together(
    fake: FakeOpenAI, storage_type: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    storage: dict[str, Any] = {}
    if storage_type == "postgres":
        storage = {"type": "postgres", "config": {"url": request.getfixturevalue("postgres_url"), "max_connections": 4}}
    run_yaml = write_config(tmp_path / "run.yaml", fake, storage)
    log = tmp_path / "server.log"
    env = {**os.environ, "LAMINA_LOG_LEVEL": "INFO"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            # Port 0: the parent binds a free port and names it (a port picked here could be taken before it binds).
            [LAMINA, "run", str(run_yaml), "--port", "0", "--workers", "2", "--log-format", "json"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(lambda: len(worker_pids(log)) == 2, process, "two workers", log)
        port, first_pids = serving(log)
        base = f"http://127.0.0.1:{port}/v1"

        content = os.urandom(300_000)
        uploaded = requests.post(
            f"{base}/files", files={"file": ("data.bin", content)}, data={"purpose": "assistants"}, timeout=30
        )
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]

        def read(_: int) -> bytes:
            # A new connection each time (no session), so the kernel hands them to either worker.
            answer = requests.get(f"{base}/files/{file_id}/content", timeout=30)
            assert answer.status_code == 200, answer.text
            return answer.content

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            assert all(body == content for body in pool.map(read, range(READS)))
        served = [line for line in log_lines(log) if line.get("logger") == "lamina.request"]
        readers = {line["worker"] for line in served if line.get("route", "").endswith("/content")}
        assert readers == {1, 2}, f"the reads were served by workers {readers}"

        if storage_type == "sqlite":
            # A vector store filled by one worker is searched by both: each hnswlib index catches up through SQLite.
            text = " ".join(f"Sentence {i}: the heron waits by reed bed {i % 5}." for i in range(100))
            notes = requests.post(
                f"{base}/files",
                files={"file": ("notes.txt", text.encode())},
                data={"purpose": "assistants"},
                timeout=30,
            ).json()["id"]
            store = requests.post(f"{base}/vector_stores", json={"file_ids": [notes]}, timeout=30).json()["id"]
            wait_for(
                lambda: (
                    requests.get(f"{base}/vector_stores/{store}", timeout=30).json()["file_counts"]["completed"] == 1
                ),
                process,
                "the file's ingestion",
                log,
            )

            def search(_: int) -> list[str]:
                answer = requests.post(
                    f"{base}/vector_stores/{store}/search", json={"query": "heron reed bed 3"}, timeout=30
                )
                assert answer.status_code == 200, answer.text
                return [hit["file_id"] for hit in answer.json()["data"]]

            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                assert all(found and set(found) == {notes} for found in pool.map(search, range(READS)))
            searched = {
                line["worker"]
                for line in log_lines(log)
                if line.get("route", "").endswith("/search") and "worker" in line
            }
            assert searched == {1, 2}, f"the searches were served by workers {searched}"

        # A worker killed is replaced, and the port keeps answering meanwhile (the other worker).
        os.kill(first_pids[0], signal.SIGKILL)
        wait_for(lambda: len(worker_pids(log)) == 2 and worker_pids(log) != first_pids, process, "a new worker", log)
        assert requests.get(f"{base}/files/{file_id}", timeout=30).json()["bytes"] == len(content)
        pids = worker_pids(log)

        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_WAIT_SECONDS) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert any(line["message"] == "all workers stopped" for line in log_lines(log))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
