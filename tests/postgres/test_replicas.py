"""Several Lamina servers sharing one PostgreSQL, each with a data directory of its own (so nothing is shared on
disk): what one does, the others see; a new one started later finds everything; replicas starting together on
an empty database migrate it once; and a Postgres outage is a 503 naming the store, healed without a restart.

Registries, jobs and files' bytes are in the PostgreSQL 15 at 127.0.0.1:5432; vector stores in the pgserver
PostgreSQL 16 with pgvector. Embeddings come from the fake OpenAI upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import requests
import yaml
from lamina.testing import serve
from lamina_storage_postgres.database import migrate, schema_versions
from lamina_storage_postgres.storage import SCHEMA
from openai import NotFoundError, OpenAI

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI


def replica_config(fake: FakeOpenAI, postgres_url: str, pgvector_url: str, data_dir: Path) -> dict[str, Any]:
    return {
        "storage": {"dir": str(data_dir), "type": "postgres", "config": {"url": postgres_url, "max_connections": 4}},
        "providers": {
            "inference": [
                {
                    "id": "fake",
                    "type": "remote::openai",
                    "config": {
                        "base_url": fake.base_url,
                        "models": [EMBEDDING_MODEL],
                        "embedding_models": [EMBEDDING_MODEL],
                        "max_retries": 0,
                    },
                }
            ],
            "files": [{"id": "files", "type": "remote::postgres"}],
            "vector_io": [{"id": "pgvector", "type": "remote::pgvector", "config": {"url": pgvector_url}}],
        },
        "apis": {"vector_io": {"default_embedding_model": f"fake/{EMBEDDING_MODEL}"}},
    }


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as upstream:
        yield upstream


def client(url: str) -> OpenAI:
    return OpenAI(base_url=url, api_key="unused", max_retries=0)


def test_three_replicas_share_files_and_vector_stores(
    fake: FakeOpenAI, postgres_url: str, pgvector_url: str, tmp_path: Path
) -> None:
    def config(name: str) -> dict[str, Any]:
        return replica_config(fake, postgres_url, pgvector_url, tmp_path / name)

    big = os.urandom(2 * 1024 * 1024 + 12345)  # three 1 MiB rows
    text = " ".join(f"Sentence {i}: the heron waits by reed bed {i % 5}." for i in range(200))
    with serve(config("a")) as url_a, serve(config("b")) as url_b, serve(config("c")) as url_c:
        a, b, c = client(url_a), client(url_b), client(url_c)
        blob = a.files.create(file=("blob.bin", big), purpose="assistants")
        notes = a.files.create(file=("notes.txt", text.encode()), purpose="assistants")
        assert b.files.content(blob.id).read() == big
        assert c.files.retrieve(notes.id).bytes == len(text.encode())

        store = b.vector_stores.create(name="shared", extra_body={"provider_id": "pgvector"})
        done = b.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=notes.id, attributes={"topic": "birds"}
        )
        assert done.status == "completed", done.last_error
        found = c.vector_stores.search(vector_store_id=store.id, query="heron reed bed 3", max_num_results=5)
        assert found.data and all(r.file_id == notes.id for r in found.data)
        assert any("heron" in r.content[0].text for r in found.data)
        birds = {"type": "eq", "key": "topic", "value": "birds"}
        filtered = c.vector_stores.search(vector_store_id=store.id, query="heron", filters=birds)  # type: ignore[arg-type]
        assert filtered.data
        fish = {"type": "eq", "key": "topic", "value": "fish"}
        assert not c.vector_stores.search(vector_store_id=store.id, query="heron", filters=fish).data  # type: ignore[arg-type]
        keyword = c.vector_stores.search(
            vector_store_id=store.id, query="heron", extra_body={"search_mode": "keyword"}, max_num_results=3
        )
        assert len(keyword.data) == 3

    # A restart (a new replica, an empty data directory of its own) finds everything, then sees deletions by A.
    with serve(config("a2")) as url_a, serve(config("d")) as url_d:
        a, d = client(url_a), client(url_d)
        assert d.files.content(blob.id).read() == big
        again = d.vector_stores.search(vector_store_id=store.id, query="heron reed bed 3", max_num_results=5)
        assert [r.content[0].text for r in again.data] == [r.content[0].text for r in found.data]
        a.files.delete(blob.id)
        with pytest.raises(NotFoundError):
            d.files.retrieve(blob.id)
        with pytest.raises(NotFoundError):
            d.files.content(blob.id)
        a.vector_stores.delete(store.id)
        with pytest.raises(NotFoundError):
            d.vector_stores.retrieve(store.id)
    assert fetch_value(postgres_url, "SELECT count(*) FROM lamina_file_bytes WHERE file_id = $1", blob.id) == 0


def fetch_value(url: str, query: str, *args: Any) -> Any:
    """A synchronous look into the database, for assertions."""

    async def go() -> Any:
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetchval(query, *args)
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, go()).result()


async def test_replicas_migrating_at_once_migrate_once(postgres_url: str) -> None:
    connections = [await asyncpg.connect(postgres_url) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(migrate(connection, SCHEMA) for connection in connections))
        assert sorted(applied) == [[], [], [], list(range(1, SCHEMA.latest + 1))]
        assert (await schema_versions(connections[0]))["storage"] == SCHEMA.latest
        assert await migrate(connections[1], SCHEMA) == []
    finally:
        for connection in connections:
            await connection.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, f"lamina run exited with {process.returncode}"
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(url + "/health", timeout=2).ok:
                return
        time.sleep(0.2)
    raise AssertionError(f"{url} never became healthy")


@pytest.mark.slow  # two `lamina run` processes and the CLI: tens of seconds on a loaded machine
def test_two_lamina_run_processes_start_on_an_empty_database(
    fake: FakeOpenAI, postgres_url: str, pgvector_url: str, tmp_path: Path
) -> None:
    processes, urls = [], []
    for name in ("one", "two"):
        run_yaml = tmp_path / f"{name}.yaml"
        run_yaml.write_text(yaml.safe_dump(replica_config(fake, postgres_url, pgvector_url, tmp_path / name)))
        port = _free_port()
        urls.append(f"http://127.0.0.1:{port}/v1")
        processes.append(
            subprocess.Popen(
                [Path(sys.executable).parent / "lamina", "run", str(run_yaml), "--port", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    try:
        for url, process in zip(urls, processes, strict=True):
            _wait_healthy(url, process)
        uploaded = client(urls[0]).files.create(file=("x.txt", b"hello"), purpose="assistants")
        assert client(urls[1]).files.content(uploaded.id).read() == b"hello"
        status = subprocess.run(
            [Path(sys.executable).parent / "lamina", "db", "status", "--url", postgres_url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "storage      version 1 of 1: current" in status and "files        version 1 of 1: current" in status
    finally:
        for process in processes:
            process.terminate()
        errors = [process.communicate(timeout=30)[1].decode() for process in processes]
    assert all(process.returncode == 0 for process in processes), errors
    assert not [line for text in errors for line in text.splitlines() if "Traceback" in line], errors


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL that a test can cut (every connection closed, nothing
    listening) and restore on the same port: Postgres going away and coming back, at the network edge."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = _free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_an_outage_is_a_503_naming_the_store_and_heals(fake: FakeOpenAI, postgres_url: str, tmp_path: Path) -> None:
    proxy = Proxy(("127.0.0.1", 5432))
    proxy.start()
    try:
        through = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        config = {
            "storage": {"dir": str(tmp_path), "type": "postgres", "config": {"url": through, "max_connections": 3}},
            "providers": {
                "files": [{"id": "files", "type": "remote::postgres"}],
                "inference": [{"id": "fake", "type": "remote::openai", "config": {"base_url": fake.base_url}}],
            },
        }
        with serve(config) as url:
            client(url).models.list()  # the upstream's models are listed (kept in memory)
            uploaded = client(url).files.create(file=("x.txt", b"kept"), purpose="assistants")
            proxy.stop()
            down = requests.get(url + "/files", timeout=30)
            assert down.status_code == 503, down.text
            error = down.json()["error"]
            assert error["code"] == "storage_unavailable" and "storage 'postgres'" in error["message"]
            assert "password" not in down.text
            assert requests.get(url + f"/files/{uploaded.id}/content", timeout=30).status_code == 503
            # What needs no storage keeps working: a chat through the upstream.
            chat = client(url).chat.completions.create(
                model=f"fake/{CHAT_MODEL}", messages=[{"role": "user", "content": "still here"}]
            )
            assert chat.choices[0].message.content == "echo: still here"
            proxy.start()
            # Connections broken by the outage are replaced as they are next used: within the pool's size.
            answers = [requests.get(url + "/files", timeout=30).status_code for _ in range(4)]
            assert answers[-1] == 200, answers
            assert client(url).files.content(uploaded.id).read() == b"kept"
    finally:
        proxy.close()
