"""A server killed with SIGKILL in the middle of an ingestion comes back whole: `lamina run` as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import yaml
from lamina.ingest import chunk_text
from openai import OpenAI
from vector_helpers import CORPUS, QUESTIONS, vector_config

STRATEGY = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def lamina_process(run_yaml: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    command = [sys.executable, "-c", "from lamina.cli import main; main()", "run", str(run_yaml), "--port", str(port)]
    with open(log, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=os.environ.copy())
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError(f"lamina run exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"lamina run did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def big_text(seed: int) -> str:
    return " ".join(f"Record {seed}-{i} notes that river number {i} floods in spring." for i in range(200))


def test_sigkill_during_ingestion(minilm: str, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    run_yaml = tmp_path / "run.yaml"
    config = vector_config(minilm, storage=storage)
    config["apis"]["vector_io"]["embedding_batch_size"] = 4  # many small inserts: the kill lands between two of them
    config["apis"]["vector_io"]["ingestion_concurrency"] = 1  # one file after another: a long window to kill in
    config["apis"]["vector_io"]["ingestion_lease_seconds"] = 3  # the killed worker's jobs are free again soon
    run_yaml.write_text(yaml.safe_dump(config))
    log = tmp_path / "server.log"

    with lamina_process(run_yaml, log) as (process, base_url):
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        corpus_ids = [
            client.files.create(file=(n, t.encode()), purpose="assistants").id for n, (t, _) in CORPUS.items()
        ]
        store = client.vector_stores.create(name="durable")
        done = client.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=corpus_ids)
        assert done.file_counts.completed == len(CORPUS)
        big = {f"river{i}.txt": big_text(i) for i in range(3)}
        big_ids = [client.files.create(file=(n, t.encode()), purpose="assistants").id for n, t in big.items()]
        batch = client.vector_stores.file_batches.create(
            vector_store_id=store.id,
            file_ids=big_ids,
            chunking_strategy=STRATEGY,  # type: ignore[arg-type]
        )
        deadline = time.monotonic() + 120
        while True:  # kill once the batch is part-way: one file done, others still being embedded
            counts = client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id).file_counts
            if counts.completed >= 1 and counts.in_progress >= 1:
                break
            assert counts.in_progress, f"the batch finished before the kill; make the files bigger ({counts})"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    for database in storage.rglob("*.db"):
        assert integrity(database) == "ok", database

    with lamina_process(run_yaml, log) as (_, base_url):
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        assert [s.id for s in client.vector_stores.list()] == [store.id]
        deadline = time.monotonic() + 120
        while (current := client.vector_stores.retrieve(store.id)).file_counts.in_progress:
            assert time.monotonic() < deadline, "interrupted files never finished after the restart"
            time.sleep(0.2)
        counts = current.file_counts
        assert counts.total == len(CORPUS) + len(big)
        assert counts.completed + counts.failed == counts.total and counts.completed >= len(CORPUS) + 1
        records = {f.id: f for f in client.vector_stores.files.list(vector_store_id=store.id, limit=100)}
        for file_id, (name, text) in zip(big_ids, big.items(), strict=True):
            record = records[file_id]
            chunks = list(client.vector_stores.files.content(file_id=file_id, vector_store_id=store.id))
            if record.status == "completed":  # re-ingested from scratch: no chunk twice, none missing
                assert len(chunks) == len(chunk_text(text, 100, 0)), name
            else:
                assert record.last_error is not None and chunks == []
        for question, expected in QUESTIONS:
            top = client.vector_stores.search(vector_store_id=store.id, query=question).data[0]
            assert top.filename == expected, question
        hit = client.vector_stores.search(vector_store_id=store.id, query="Record 2-17 river floods", max_num_results=1)
        assert hit.data[0].filename.startswith("river")
        assert client.files.content(big_ids[0]).read().decode() == big["river0.txt"]
