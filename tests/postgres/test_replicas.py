"""Several Lamina servers sharing one PostgreSQL, each with a data directory of its own (so nothing is shared on
disk): what one does, the others see; a new one started later finds everything; replicas starting together on
an empty database migrate it once; and a Postgres outage is a 503 naming the store, healed without a restart.

Registries, jobs and files' bytes are in the PostgreSQL 15 at 127.0.0.1:5432; vector stores in the pgserver
PostgreSQL 16 with pgvector. Embeddings come from the fake OpenAI upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import requests
from lamina.testing import serve
from lamina_storage_postgres.database import migrate, schema_versions
from lamina_storage_postgres.storage import SCHEMA
from openai import NotFoundError, OpenAI
from postgres_helpers import Forwarder, Replica, fetch_value, start_replicas, tcp_url, unix_socket

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


@pytest.mark.slow  # two `lamina run` processes and the CLI: tens of seconds on a loaded machine
def test_two_lamina_run_processes_start_on_an_empty_database(
    fake: FakeOpenAI, postgres_url: str, pgvector_url: str, tmp_path: Path
) -> None:
    replicas = [
        Replica(name, replica_config(fake, postgres_url, pgvector_url, tmp_path / name), tmp_path)
        for name in ("one", "two")
    ]
    try:
        start_replicas(replicas)
        uploaded = client(replicas[0].url).files.create(file=("x.txt", b"hello"), purpose="assistants")
        assert client(replicas[1].url).files.content(uploaded.id).read() == b"hello"
        status = subprocess.run(
            [Path(sys.executable).parent / "lamina", "db", "status", "--url", postgres_url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "storage      version 1 of 1: current" in status and "files        version 1 of 1: current" in status
    finally:
        codes = [replica.stop() for replica in replicas]
    assert codes == [0, 0], [replica.log()[-2000:] for replica in replicas]
    assert not [replica.name for replica in replicas if "Traceback" in replica.log()], [r.log() for r in replicas]


RECOVERY_ATTEMPTS = 8  # requests a replica may answer 503 after the outage while its pools replace connections


def recovered(method: str, url: str, **kwargs: Any) -> requests.Response:
    """The first answer that is not a 503, within RECOVERY_ATTEMPTS requests: the replica heals by itself."""
    for _ in range(RECOVERY_ATTEMPTS):
        answer = requests.request(method, url, timeout=30, **kwargs)
        if answer.status_code != 503:
            return answer
    raise AssertionError(f"{method} {url} still answers 503 after the outage: {answer.text}")


def chatting_replica_config(fake: FakeOpenAI, postgres_url: str, pgvector_url: str, data_dir: Path) -> dict[str, Any]:
    """A replica that also chats and keeps Responses, with small pools (so recovery is quick to observe)."""
    settings = replica_config(fake, postgres_url, pgvector_url, data_dir)
    settings["storage"]["config"]["max_connections"] = 3
    settings["providers"]["inference"][0]["config"]["models"] = [CHAT_MODEL, EMBEDDING_MODEL]
    settings["providers"]["responses"] = [{"id": "responses", "type": "inline::responses"}]
    return settings


def test_an_outage_is_a_503_naming_the_store_and_heals(
    fake: FakeOpenAI, postgres_url: str, pgvector_url: str, tmp_path: Path
) -> None:
    """Both databases (registries, jobs and files; vector chunks) go away at once under two replicas and come
    back: meanwhile requests that need them get a 503 naming the store and the rest keep working; afterwards both
    replicas answer again without a restart, everything acknowledged before the outage is there, and their
    ingestion workers (whose polling failed throughout) ingest again."""
    storage = Forwarder(("127.0.0.1", 5432)).start()
    vectors = Forwarder(unix_socket(pgvector_url)).start()
    try:
        through = tcp_url(postgres_url, "127.0.0.1", storage.port)
        vectors_through = tcp_url(pgvector_url, "127.0.0.1", vectors.port)

        def config(name: str) -> dict[str, Any]:
            return chatting_replica_config(fake, through, vectors_through, tmp_path / name)

        with serve(config("a")) as url_a, serve(config("b")) as url_b:
            a, b = client(url_a), client(url_b)
            uploaded = a.files.create(file=("x.txt", b"kept: the heron waits"), purpose="assistants")
            store = b.vector_stores.create(name="kept", extra_body={"provider_id": "pgvector"})
            attached = a.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=uploaded.id)
            assert attached.status == "completed", attached.last_error
            answered = b.responses.create(model=f"fake/{CHAT_MODEL}", input="before the outage", store=True)
            for url in (url_a, url_b):
                assert requests.get(url + "/health/ready", timeout=30).json() == {"status": "OK"}

            storage.stop()
            vectors.stop()
            for url in (url_a, url_b):
                # Live, not ready: a load balancer takes the replica out of rotation without restarting it.
                assert requests.get(url + "/health", timeout=30).status_code == 200
                not_ready = requests.get(url + "/health/ready", timeout=30)
                assert not_ready.status_code == 503, not_ready.text
                assert "storage 'postgres'" in not_ready.json()["error"]["message"]
                down = requests.get(url + "/files", timeout=30)
                assert down.status_code == 503, down.text
                error = down.json()["error"]
                assert error["code"] == "storage_unavailable" and "storage 'postgres'" in error["message"]
                assert "password" not in down.text
                assert requests.get(url + f"/files/{uploaded.id}/content", timeout=30).status_code == 503
                assert requests.get(url + f"/responses/{answered.id}", timeout=30).status_code == 503
                refused = requests.post(
                    url + "/files", files={"file": ("y.txt", b"refused")}, data={"purpose": "assistants"}, timeout=30
                )
                assert refused.status_code == 503, refused.text
                # What needs no storage keeps working: a chat through the upstream.
                chat = client(url).chat.completions.create(
                    model=f"fake/{CHAT_MODEL}", messages=[{"role": "user", "content": "still here"}]
                )
                assert chat.choices[0].message.content == "echo: still here"
            storage.start()
            # The registries answer again; the vector store's database is still away: a 503 naming pgvector.
            assert recovered("GET", f"{url_a}/vector_stores/{store.id}").status_code == 200
            search = requests.post(url_a + f"/vector_stores/{store.id}/search", json={"query": "heron"}, timeout=30)
            assert search.status_code == 503, search.text
            assert "pgvector" in search.json()["error"]["message"], search.text
            not_ready = requests.get(url_a + "/health/ready", timeout=30)
            assert not_ready.status_code == 503 and "pgvector" in not_ready.json()["error"]["message"], not_ready.text
            vectors.start()

            for url in (url_a, url_b):
                assert recovered("GET", f"{url}/health/ready").json() == {"status": "OK"}
                assert recovered("GET", f"{url}/files").status_code == 200
                assert recovered("GET", f"{url}/files/{uploaded.id}/content").content == b"kept: the heron waits"
                assert recovered("GET", f"{url}/responses/{answered.id}").json()["status"] == "completed"
                found = recovered("POST", f"{url}/vector_stores/{store.id}/search", json={"query": "heron"})
                assert [hit["file_id"] for hit in found.json()["data"]] == [uploaded.id], found.text
            later = b.files.create(file=("z.txt", b"after: the heron flies"), purpose="assistants")
            again = b.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=later.id)
            assert again.status == "completed", again.last_error
    finally:
        storage.close()
        vectors.close()


def test_a_restarted_postgres_is_a_503_meanwhile_and_heals(
    fake: FakeOpenAI, restartable_postgres: Any, tmp_path: Path
) -> None:
    """PostgreSQL really restarted (a fast shutdown: every session is terminated by the server, then it starts
    again), with registries, files and vector chunks all in its one database as in the postgres distro."""
    from pgserver._commands import pg_ctl

    server = restartable_postgres
    url = server.get_uri("postgres")
    config = chatting_replica_config(fake, url, url, tmp_path)
    config["providers"]["vector_io"][0]["config"] = {}  # the storage's database and pool, as the distro does
    with serve(config) as base:
        api = client(base)
        uploaded = api.files.create(file=("x.txt", b"kept: the heron waits"), purpose="assistants")
        store = api.vector_stores.create(name="kept", extra_body={"provider_id": "pgvector"})
        attached = api.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=uploaded.id)
        assert attached.status == "completed", attached.last_error
        answered = api.responses.create(model=f"fake/{CHAT_MODEL}", input="before the restart", store=True)

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        try:
            down = requests.get(base + "/files", timeout=30)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "storage_unavailable"
            assert "storage 'postgres'" in down.json()["error"]["message"]
            search = requests.post(base + f"/vector_stores/{store.id}/search", json={"query": "heron"}, timeout=30)
            assert search.status_code == 503, search.text
        finally:
            server.ensure_postgres_running()

        assert recovered("GET", f"{base}/files/{uploaded.id}/content").content == b"kept: the heron waits"
        assert recovered("GET", f"{base}/responses/{answered.id}").json()["status"] == "completed"
        found = recovered("POST", f"{base}/vector_stores/{store.id}/search", json={"query": "heron"})
        assert [hit["file_id"] for hit in found.json()["data"]] == [uploaded.id], found.text
        later = api.files.create(file=("z.txt", b"after: the heron flies"), purpose="assistants")
        again = api.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=later.id)
        assert again.status == "completed", again.last_error
