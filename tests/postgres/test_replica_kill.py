"""Three `lamina run` replicas on one PostgreSQL under a mixed load (uploads, vector-store attachments and their
ingestion, searches, chat completions, stored Responses), one of them SIGKILLed while it holds a half-done
ingestion job. Clients retry a failed request on another replica, as a load balancer does. Afterwards every
acknowledged write is there exactly once and readable from each live replica, every attached file is ingested
exactly once (its chunks are exactly what its text yields, none twice), and the jobs the dead replica held were
taken over by a live one once their lease ran out.

Which worker claimed which job is read from the database itself: the test adds a trigger to its own scratch
database that records every change of a job's worker (the schema is the backend's; the trigger only watches).
Ingestion is slowed at the network edge (the fake upstream answers the documents' embeddings after a pause), so
the victim can be killed while it holds a job whose chunks are partly written."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from lamina.ingest import chunk_text
from postgres_helpers import Replica, execute, fetch_rows, fetch_value, start_replicas

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI

LEASE_SECONDS = 3.0
CHUNK_TOKENS = 100
STATIC_CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": CHUNK_TOKENS, "chunk_overlap_tokens": 0}}
DOCUMENT_WORD = "lamina-doc"  # in every chunk of every document, in no query: marks embeddings to slow down
EMBEDDING_PAUSE_SECONDS = 0.25  # per document chunk (one chunk per embeddings call): ingestion takes seconds
CLIENTS = 4
ROUNDS_AFTER_KILL = 3  # each client's rounds once a replica is dead: the load goes on without it
MOST_ROUNDS_BEFORE_KILL = 12  # the moment to kill never came: the test fails rather than loop on
REQUEST_TIMEOUT_SECONDS = 60
SETTLE_WITHIN_SECONDS = 120  # a generous bound for ingestion to finish after the load; never asserted as a time
INGEST = "vector_io.ingest"


class SlowEmbeddings(FakeOpenAI):
    """The fake upstream, answering embeddings of document chunks after a pause (queries at once)."""

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await super()._record(request)
        if request.path.endswith("/embeddings") and DOCUMENT_WORD in str(body.get("input")):
            await asyncio.sleep(EMBEDDING_PAUSE_SECONDS)
        return body


def document(tag: str) -> str:
    """About six chunks of text, every sentence unique (so a chunk written twice is a duplicate, never a
    coincidence), the tag a word of its own for keyword search."""
    return " ".join(f"{tag} {DOCUMENT_WORD} sentence {i}: the heron waits by reed bed {i % 7}." for i in range(40))


def replica_config(fake: FakeOpenAI, postgres_url: str, pgvector_url: str) -> dict[str, Any]:
    return {
        "storage": {"type": "postgres", "config": {"url": postgres_url, "max_connections": 6}},
        "providers": {
            "inference": [
                {
                    "id": "fake",
                    "type": "remote::openai",
                    "config": {
                        "base_url": fake.base_url,
                        "models": [CHAT_MODEL, EMBEDDING_MODEL],
                        "embedding_models": [EMBEDDING_MODEL],
                        "max_retries": 0,
                    },
                }
            ],
            "files": [{"id": "files", "type": "remote::postgres"}],
            "vector_io": [{"id": "pgvector", "type": "remote::pgvector", "config": {"url": pgvector_url}}],
            "responses": [{"id": "responses", "type": "inline::responses"}],
        },
        "apis": {
            "vector_io": {
                "default_embedding_model": f"fake/{EMBEDDING_MODEL}",
                "ingestion_lease_seconds": LEASE_SECONDS,
                "ingestion_concurrency": 2,
                "embedding_batch_size": 1,
            }
        },
    }


class LoadBalancer:
    """Round robin over the replicas; a request that fails to connect or gets a 502/503/504 is sent to the next."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.turn = itertools.count()
        self.failovers = 0

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        first = next(self.turn)
        for attempt in range(3 * len(self.urls)):
            url = self.urls[(first + attempt) % len(self.urls)]
            try:
                response = requests.request(method, url + path, timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                self.failovers += 1
                continue
            if response.status_code in (502, 503, 504):
                self.failovers += 1
                continue
            return response
        raise AssertionError(f"{method} {path}: no replica answered")


class Acknowledged:
    """What the clients were told was written."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: dict[str, str] = {}  # file id -> text
        self.attached: set[str] = set()  # file ids attached to the store
        self.responses: dict[str, str] = {}  # response id -> its input


def run_client(
    number: int, balancer: LoadBalancer, store_id: str, acked: Acknowledged, killed: threading.Event
) -> None:
    after_kill = 0
    for round_number in itertools.count():
        if killed.is_set():
            after_kill += 1
            if after_kill > ROUNDS_AFTER_KILL:
                return
        elif round_number >= MOST_ROUNDS_BEFORE_KILL:
            return
        tag = f"c{number}r{round_number}"
        text = document(tag)
        upload = balancer.request(
            "POST", "/files", files={"file": (f"{tag}.txt", text.encode())}, data={"purpose": "assistants"}
        )
        assert upload.status_code == 200, upload.text
        file_id = upload.json()["id"]
        with acked.lock:
            acked.files[file_id] = text
        attach = balancer.request(
            "POST", f"/vector_stores/{store_id}/files", json={"file_id": file_id, "chunking_strategy": STATIC_CHUNKING}
        )
        assert attach.status_code == 200, attach.text
        with acked.lock:
            acked.attached.add(file_id)
        search = balancer.request("POST", f"/vector_stores/{store_id}/search", json={"query": f"heron reed bed {tag}"})
        assert search.status_code == 200, search.text
        chat = balancer.request(
            "POST",
            "/chat/completions",
            json={"model": f"fake/{CHAT_MODEL}", "messages": [{"role": "user", "content": tag}]},
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == f"echo: {tag}"
        response = balancer.request(
            "POST", "/responses", json={"model": f"fake/{CHAT_MODEL}", "input": tag, "store": True}
        )
        assert response.status_code == 200, response.text
        assert output_text(response.json()) == f"echo: {tag}"
        with acked.lock:
            acked.responses[response.json()["id"]] = tag


def output_text(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def listed(url: str, path: str) -> list[dict[str, Any]]:
    """Every object of a paginated OpenAI list, from one replica."""
    objects: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = requests.get(url + path, params=params, timeout=REQUEST_TIMEOUT_SECONDS)
        assert page.status_code == 200, page.text
        body = page.json()
        objects += body["data"]
        if not body["has_more"]:
            return objects
        params["after"] = body["data"][-1]["id"]


WATCH_CLAIMS = """
CREATE TABLE test_job_claims (
    kind text, key text, id text, worker text, attempts integer, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION test_record_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_job_claims (kind, key, id, worker, attempts)
    VALUES (NEW.kind, NEW.key, NEW.id, NEW.worker, NEW.attempts);
    RETURN NEW;
END $$;
CREATE TRIGGER test_record_claim AFTER UPDATE ON lamina_jobs FOR EACH ROW
    WHEN (NEW.worker IS NOT NULL AND NEW.worker IS DISTINCT FROM OLD.worker)
    EXECUTE FUNCTION test_record_claim();
"""


@pytest.fixture
def slow_upstream() -> Iterator[SlowEmbeddings]:
    with SlowEmbeddings() as upstream:
        yield upstream


@pytest.mark.slow  # three `lamina run` processes under load: about a minute on a loaded machine
def test_a_replica_killed_under_load_loses_nothing(
    slow_upstream: SlowEmbeddings, postgres_url: str, pgvector_url: str, tmp_path: Path
) -> None:
    config = replica_config(slow_upstream, postgres_url, pgvector_url)
    # Each replica a home of its own (nothing shared on disk): the data directory defaults to $LAMINA_HOME/...
    replicas = [
        Replica(name, config, tmp_path / name, env={"LAMINA_HOME": str(tmp_path / name / "home")})
        for name in ("a", "b", "c")
    ]
    try:
        start_replicas(replicas)
        execute(postgres_url, WATCH_CLAIMS)
        balancer = LoadBalancer([replica.url for replica in replicas])
        created = balancer.request("POST", "/vector_stores", json={"name": "load", "provider_id": "pgvector"})
        assert created.status_code == 200, created.text
        store_id = created.json()["id"]
        victim, survivors = replicas[0], replicas[1:]
        acked, killed = Acknowledged(), threading.Event()

        with ThreadPoolExecutor(CLIENTS) as pool:
            clients = [pool.submit(run_client, n, balancer, store_id, acked, killed) for n in range(CLIENTS)]
            held = kill_while_ingesting(victim, store_id, acked, clients, postgres_url, pgvector_url)
            killed_at = fetch_value(postgres_url, "SELECT clock_timestamp()")
            killed.set()
            for client in clients:
                client.result()
        assert balancer.failovers, "no request was ever sent to the dead replica"

        settle(survivors[0].url, store_id, acked, postgres_url)
        check_jobs_taken_over(held, victim, killed_at, postgres_url)
        for replica in survivors:
            check_everything_acknowledged(replica.url, store_id, acked)
        duplicates = fetch_rows(
            pgvector_url,
            "SELECT file_id, content, count(*) FROM lamina_vector_chunks WHERE store_id = $1 "
            "GROUP BY file_id, content HAVING count(*) > 1",
            store_id,
        )
        assert not duplicates, f"chunks written twice: {duplicates[:3]}"
    finally:
        for replica in replicas:
            replica.stop()
    for replica in survivors:
        assert "Traceback" not in replica.log(), replica.log()[-3000:]


def kill_while_ingesting(
    victim: Replica, store_id: str, acked: Acknowledged, clients: list[Any], postgres_url: str, pgvector_url: str
) -> list[dict[str, Any]]:
    """SIGKILL the victim while it holds an ingestion job whose file has some chunks written but not all; return
    the jobs (key, id) it held when it died."""
    mine = f"%:{victim.pid}:%"  # a worker's name is host:pid:...
    while not all(client.done() for client in clients):
        for job in fetch_rows(
            postgres_url, "SELECT key, id FROM lamina_jobs WHERE kind = $1 AND worker LIKE $2", INGEST, mine
        ):
            file_id = job["key"].partition("/")[2]
            with acked.lock:
                text = acked.files.get(file_id)
            if text is None:
                continue
            written = fetch_value(
                pgvector_url,
                "SELECT count(*) FROM lamina_vector_chunks WHERE store_id = $1 AND file_id = $2",
                store_id,
                file_id,
            )
            if 0 < written < len(chunk_text(text, CHUNK_TOKENS, 0)) - 1:
                victim.kill()
                held = fetch_rows(
                    postgres_url, "SELECT key, id FROM lamina_jobs WHERE kind = $1 AND worker LIKE $2", INGEST, mine
                )
                assert held, "the victim's job finished between the look and the kill"
                return held
        time.sleep(0.02)
    for client in clients:
        client.result()  # a client's failure explains more than the message below
    raise AssertionError("the victim never held a half-written ingestion job while the load ran")


def settle(url: str, store_id: str, acked: Acknowledged, postgres_url: str) -> None:
    """Wait (bounded) until no ingestion job is left and no attached file is still in progress."""
    deadline = time.monotonic() + SETTLE_WITHIN_SECONDS
    while time.monotonic() < deadline:
        pending = fetch_value(postgres_url, "SELECT count(*) FROM lamina_jobs WHERE kind = $1", INGEST)
        statuses = {f["id"]: f["status"] for f in listed(url, f"/vector_stores/{store_id}/files")}
        if not pending and "in_progress" not in statuses.values():
            return
        time.sleep(0.5)
    raise AssertionError(f"ingestion never finished: {pending} jobs left, statuses {Counter(statuses.values())}")


def check_jobs_taken_over(held: list[dict[str, Any]], victim: Replica, killed_at: Any, postgres_url: str) -> None:
    """Each job the victim held was claimed again, same job, by a live replica's worker after the kill."""
    for job in held:
        claims = fetch_rows(
            postgres_url,
            "SELECT worker, attempts FROM test_job_claims WHERE key = $1 AND id = $2 AND at > $3 ORDER BY at",
            job["key"],
            job["id"],
            killed_at,
        )
        assert claims, f"job {job['key']} held by the killed replica was never claimed again"
        assert all(f":{victim.pid}:" not in claim["worker"] for claim in claims), claims
        assert claims[0]["attempts"] >= 2, claims  # the same job's next attempt, not a new job


def check_everything_acknowledged(url: str, store_id: str, acked: Acknowledged) -> None:
    """Every acknowledged write is present exactly once and readable, as this replica sees it."""
    files = Counter(f["id"] for f in listed(url, "/files"))
    for file_id, text in acked.files.items():
        assert files[file_id] == 1, (file_id, files[file_id])
        content = requests.get(f"{url}/files/{file_id}/content", timeout=REQUEST_TIMEOUT_SECONDS)
        assert content.status_code == 200 and content.text == text, (file_id, content.status_code)

    attachments = Counter()
    for record in listed(url, f"/vector_stores/{store_id}/files"):
        attachments[record["id"]] += 1
        assert record["status"] == "completed", record
    for file_id in acked.attached:
        assert attachments[file_id] == 1, (file_id, attachments[file_id])
        chunks = requests.get(f"{url}/vector_stores/{store_id}/files/{file_id}/content", timeout=30).json()["data"]
        expected = chunk_text(acked.files[file_id], CHUNK_TOKENS, 0)
        assert sorted(c["text"] for c in chunks) == sorted(expected), (
            f"{file_id}: {len(chunks)} chunks, not {len(expected)}"
        )

    tag = acked.files[next(iter(acked.attached))].split()[0]
    found = requests.post(
        f"{url}/vector_stores/{store_id}/search",
        json={"query": tag, "search_mode": "keyword", "max_num_results": 3},
        timeout=REQUEST_TIMEOUT_SECONDS,
    ).json()["data"]
    assert found and all(tag in hit["content"][0]["text"] for hit in found), found

    stored = Counter(r["id"] for r in listed(url, "/responses"))
    for response_id, tag in acked.responses.items():
        assert stored[response_id] == 1, (response_id, stored[response_id])
        again = requests.get(f"{url}/responses/{response_id}", timeout=REQUEST_TIMEOUT_SECONDS)
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "completed" and output_text(again.json()) == f"echo: {tag}"
