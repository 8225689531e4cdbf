"""Ingestion jobs and search against a fake OpenAI-compatible embeddings upstream on 127.0.0.1, so that every
embedding call can be counted: one call per search, each chunk embedded once by two `lamina run` processes
sharing a data directory, a killed process's job resumed by the other, and searches that never write."""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from lamina.ingest import chunk_text
from lamina.testing import serve
from openai import OpenAI
from test_crash import lamina_process

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from fake_openai import EMBEDDING_MODEL, FakeOpenAI

STRATEGY = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
FILTERS: list[dict[str, Any] | None] = [
    None,
    {"type": "eq", "key": "kind", "value": "target"},
    {"type": "in", "key": "part", "value": [1, 3]},
    {
        "type": "or",
        "filters": [{"type": "gte", "key": "part", "value": 4}, {"type": "ne", "key": "kind", "value": "bulk"}],
    },
]


def fake_config(fake: FakeOpenAI, storage: Path | None = None, **vector_io: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
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
            "files": [{"id": "files", "type": "inline::localfs"}],
            "vector_io": [
                {"id": "hnswlib", "type": "inline::hnswlib", "config": {"save_interval_seconds": 1}},
                # The same provider telling the router it does neither filters nor hybrid: the router's fallbacks.
                {"id": "plain", "type": "inline::hnswlib", "config": {"capabilities": ["vector", "keyword"]}},
            ],
        },
        "apis": {"vector_io": {"default_embedding_model": f"fake/{EMBEDDING_MODEL}", **vector_io}},
    }
    if storage is not None:
        config["storage"] = {"dir": str(storage)}
    return config


def document(name: str, sentences: int) -> str:
    return " ".join(f"In {name} sentence {i} says the lake {i % 7} holds trout and reeds." for i in range(sentences))


def embedded_texts(fake: FakeOpenAI) -> list[str]:
    return [text for r in fake.hits("/v1/embeddings") for text in r["body"]["input"]]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def served(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    storage = tmp_path_factory.mktemp("storage")
    with serve(fake_config(fake, storage)) as url:
        yield url, storage


@pytest.fixture(scope="module")
def stores(served: tuple[str, Path]) -> dict[str, str]:
    """The same 1,000+ chunks in a store of each provider: a bulk file, five parts and a small target file."""
    client = OpenAI(base_url=served[0], api_key="unused", max_retries=0)
    files = [("bulk.txt", document("bulk", 6000), {"kind": "bulk"})]
    files += [(f"part{p}.txt", document(f"part{p}", 40), {"kind": "part", "part": p}) for p in range(1, 6)]
    files += [("target.txt", document("target", 80), {"kind": "target"})]
    uploaded = [(client.files.create(file=(n, t.encode()), purpose="assistants").id, a) for n, t, a in files]
    ids = {}
    for provider in ("hnswlib", "plain"):
        store = client.vector_stores.create(name=provider, extra_body={"provider_id": provider})
        for file_id, attributes in uploaded:
            done = client.vector_stores.files.create_and_poll(
                vector_store_id=store.id,
                file_id=file_id,
                attributes=attributes,
                chunking_strategy=STRATEGY,  # type: ignore[arg-type]
            )
            assert done.status == "completed", done.last_error
        ids[provider] = store.id
    return ids


def search(client: OpenAI, store_id: str, **body: Any) -> list[tuple[str, str, float]]:
    mode = body.pop("search_mode", "vector")
    page = client.vector_stores.search(vector_store_id=store_id, extra_body={"search_mode": mode}, **body)
    return [(r.filename, r.content[0].text, r.score) for r in page.data]


def test_a_filtered_search_embeds_the_query_once(
    fake: FakeOpenAI, served: tuple[str, Path], stores: dict[str, str]
) -> None:
    client = OpenAI(base_url=served[0], api_key="unused", max_retries=0)
    assert client.vector_stores.retrieve(stores["hnswlib"]).file_counts.completed == 7
    chunks = sum(
        len(list(client.vector_stores.files.content(file_id=f.id, vector_store_id=stores["hnswlib"])))
        for f in client.vector_stores.files.list(vector_store_id=stores["hnswlib"])
    )
    assert chunks >= 1000
    target = {"type": "eq", "key": "kind", "value": "target"}  # a few chunks among many: widening would be needed
    for store_id in stores.values():
        before = len(fake.hits("/v1/embeddings"))
        found = search(client, store_id, query="trout in the lake", filters=target, max_num_results=10)
        assert len(fake.hits("/v1/embeddings")) == before + 1
        assert len(found) == 10 and {name for name, _, _ in found} == {"target.txt"}
        before = len(fake.hits("/v1/embeddings"))
        search(client, store_id, query="trout", filters=target, search_mode="hybrid")
        assert len(fake.hits("/v1/embeddings")) == before + 1


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_filters_pushed_down_give_the_routers_results(
    served: tuple[str, Path], stores: dict[str, str], mode: str
) -> None:
    client = OpenAI(base_url=served[0], api_key="unused", max_retries=0)
    for filters in FILTERS:
        extra = {"filters": filters} if filters else {}
        pushed = search(client, stores["hnswlib"], query="lake 3 trout", search_mode=mode, max_num_results=20, **extra)
        routed = search(client, stores["plain"], query="lake 3 trout", search_mode=mode, max_num_results=20, **extra)
        assert pushed
        assert [(n, c) for n, c, _ in pushed] == [(n, c) for n, c, _ in routed], filters
        assert [s for _, _, s in pushed] == pytest.approx([s for _, _, s in routed], abs=1e-5)


def kv_rows(storage: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{storage / 'kvstore.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT key, value FROM kv ORDER BY key").fetchall()


def test_searches_never_write(served: tuple[str, Path], stores: dict[str, str]) -> None:
    client = OpenAI(base_url=served[0], api_key="unused", max_retries=0)
    store_id = stores["hnswlib"]
    client.vector_stores.update(store_id, expires_after={"anchor": "last_active_at", "days": 7})
    before = kv_rows(served[1])
    for mode in ("vector", "keyword", "hybrid"):
        for filters in FILTERS:
            search(client, store_id, query="reeds", search_mode=mode, **({"filters": filters} if filters else {}))
    requests.post(f"{served[0]}/vector-io/query", json={"vector_store_id": store_id, "query": "reeds"}, timeout=30)
    assert kv_rows(served[1]) == before
    # The activity is still seen, by this process, at once.
    store = client.vector_stores.retrieve(store_id)
    assert store.expires_at == store.last_active_at + 7 * 86400


def test_raw_chunks_have_string_ids(served: tuple[str, Path]) -> None:
    client = OpenAI(base_url=served[0], api_key="unused", max_retries=0)
    store = client.vector_stores.create(name="raw")
    chunks = [{"content": f"raw chunk {i}", "metadata": {"n": i, "tag": "odd" if i % 2 else "even"}} for i in range(6)]
    inserted = requests.post(
        f"{served[0]}/vector-io/insert", json={"vector_store_id": store.id, "chunks": chunks}, timeout=30
    ).json()
    assert len(inserted["chunk_ids"]) == 6 and all(isinstance(i, str) for i in inserted["chunk_ids"])
    queried = requests.post(
        f"{served[0]}/vector-io/query",
        json={
            "vector_store_id": store.id,
            "query": "raw chunk",
            "k": 6,
            "filters": {"type": "eq", "key": "tag", "value": "odd"},
        },
        timeout=30,
    ).json()
    assert sorted(c["id"] for c in queried["chunks"]) == sorted(inserted["chunk_ids"][1::2])
    assert all(c["metadata"]["tag"] == "odd" for c in queried["chunks"])


def wait_until_done(client: OpenAI, store_id: str, seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while (store := client.vector_stores.retrieve(store_id)).file_counts.in_progress:
        assert time.monotonic() < deadline, store.file_counts
        time.sleep(0.2)
    return store


def test_two_processes_ingest_each_file_once(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        fake.hang(0.05)  # slow embeddings: both processes' workers get jobs
        run_yaml = tmp_path / "run.yaml"
        config = fake_config(fake, tmp_path / "storage", ingestion_concurrency=2, embedding_batch_size=4)
        run_yaml.write_text(yaml.safe_dump(config))
        texts = {f"doc{i}.txt": document(f"doc{i}", 60) for i in range(12)}
        with (
            lamina_process(run_yaml, tmp_path / "a.log") as (_, url_a),
            lamina_process(run_yaml, tmp_path / "b.log") as (_, url_b),
        ):
            a = OpenAI(base_url=url_a, api_key="unused", max_retries=0)
            b = OpenAI(base_url=url_b, api_key="unused", max_retries=0)
            ids = [a.files.create(file=(n, t.encode()), purpose="assistants").id for n, t in texts.items()]
            store = a.vector_stores.create(name="shared")
            a.vector_stores.file_batches.create(
                vector_store_id=store.id,
                file_ids=ids,
                chunking_strategy=STRATEGY,  # type: ignore[arg-type]
            )
            done = wait_until_done(b, store.id)  # the other process sees the same records
            assert done.file_counts.completed == len(texts)
            expected = Counter(c for text in texts.values() for c in chunk_text(text, 100, 0))
            assert Counter(embedded_texts(fake)) == expected  # every chunk embedded exactly once
            for file_id, text in zip(ids, texts.values(), strict=True):
                content = [c.text for c in b.vector_stores.files.content(file_id=file_id, vector_store_id=store.id)]
                assert content == chunk_text(text, 100, 0)
        logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
        assert "Traceback" not in logs


def test_a_killed_process_job_is_resumed_by_the_other(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        fake.hang(0.1)
        run_yaml = tmp_path / "run.yaml"
        config = fake_config(
            fake, tmp_path / "storage", ingestion_concurrency=1, embedding_batch_size=2, ingestion_lease_seconds=2
        )
        run_yaml.write_text(yaml.safe_dump(config))
        text = document("long", 600)
        chunks = chunk_text(text, 100, 0)
        with (
            lamina_process(run_yaml, tmp_path / "a.log") as (process_a, url_a),
            lamina_process(run_yaml, tmp_path / "b.log") as (process_b, url_b),
        ):
            a = OpenAI(base_url=url_a, api_key="unused", max_retries=0)
            file_id = a.files.create(file=("long.txt", text.encode()), purpose="assistants").id
            store = a.vector_stores.create(name="resumed")
            a.vector_stores.files.create(
                vector_store_id=store.id,
                file_id=file_id,
                chunking_strategy=STRATEGY,  # type: ignore[arg-type]
            )
            deadline = time.monotonic() + 60
            while len(fake.hits("/v1/embeddings")) < 3:  # a worker holds the job and is working on it
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with sqlite3.connect(f"file:{tmp_path / 'storage' / 'kvstore.db'}?mode=ro", uri=True) as db:
                (worker,) = db.execute("SELECT worker FROM jobs WHERE kind = 'vector_io.ingest'").fetchone()
            holder, other, url = (
                (process_a, process_b, url_b) if f":{process_a.pid}:" in worker else (process_b, process_a, url_a)
            )
            assert f":{holder.pid}:" in worker
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            survivor = OpenAI(base_url=url, api_key="unused", max_retries=0)
            assert survivor.vector_stores.files.retrieve(file_id, vector_store_id=store.id).status == "in_progress"
            done = wait_until_done(survivor, store.id)
            assert done.file_counts.completed == 1 and other.poll() is None
            content = [c.text for c in survivor.vector_stores.files.content(file_id=file_id, vector_store_id=store.id)]
            assert content == chunks  # resumed from scratch: nothing twice, nothing missing
            counts = Counter(embedded_texts(fake))
            assert counts[chunks[0]] == 2 and counts[chunks[-1]] == 1  # begun by the killed one, redone by the other
            assert search(survivor, store.id, query="lake trout", max_num_results=3)


def stored_chunks(storage: Path) -> Counter[tuple[str, str]]:
    """(store, file) -> how many chunks the hnswlib providers hold, read from their databases."""
    held: Counter[tuple[str, str]] = Counter()
    for database in storage.rglob("vectors.db"):
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            for store_id, file_id, count in db.execute(
                "SELECT store_id, file_id, count(*) FROM chunks GROUP BY store_id, file_id"
            ):
                held[(store_id, file_id)] += count
    return held


def test_one_process_ingests_the_files_of_a_store_side_by_side(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        fake.hang(0.02)  # slow embeddings: the workers' files overlap
        config = fake_config(fake, tmp_path, ingestion_concurrency=4, embedding_batch_size=3)
        with serve(config) as url:
            client = OpenAI(base_url=url, api_key="unused", max_retries=0)
            texts = {f"doc{i}.txt": document(f"doc{i}", 30 + 7 * i) for i in range(10)}
            ids = [client.files.create(file=(n, t.encode()), purpose="assistants").id for n, t in texts.items()]
            store = client.vector_stores.create(name="side by side")
            for file_id in ids:
                client.vector_stores.files.create(
                    vector_store_id=store.id,
                    file_id=file_id,
                    chunking_strategy=STRATEGY,  # type: ignore[arg-type]
                )
            done = wait_until_done(client, store.id)
            assert done.file_counts.completed == done.file_counts.total == len(texts)
            assert done.file_counts.failed == done.file_counts.cancelled == 0
            for file_id, text in zip(ids, texts.values(), strict=True):
                content = [
                    c.text for c in client.vector_stores.files.content(file_id=file_id, vector_store_id=store.id)
                ]
                assert content == chunk_text(text, 100, 0)  # each file's chunks once, in order
            expected = Counter(c for text in texts.values() for c in chunk_text(text, 100, 0))
            assert Counter(embedded_texts(fake)) == expected
            held = stored_chunks(tmp_path)
            assert {f: held[(store.id, f)] for f in ids} == {
                f: len(chunk_text(t, 100, 0)) for f, t in zip(ids, texts.values(), strict=True)
            }


def test_a_file_or_store_deleted_while_it_ingests_leaves_nothing(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        fake.hang(0.05)
        # One worker: once it has taken up the next file it has dropped the deleted one's job.
        config = fake_config(fake, tmp_path, ingestion_concurrency=1, embedding_batch_size=2)
        with serve(config) as url:
            client = OpenAI(base_url=url, api_key="unused", max_retries=0)

            def upload(name: str, sentences: int) -> str:
                return client.files.create(file=(name, document(name, sentences).encode()), purpose="assistants").id

            def attach(store_id: str, file_id: str) -> None:
                client.vector_stores.files.create(
                    vector_store_id=store_id,
                    file_id=file_id,
                    chunking_strategy=STRATEGY,  # type: ignore[arg-type]
                )

            def embedding_calls_reach(count: int) -> None:
                deadline = time.monotonic() + 60
                while len(fake.hits("/v1/embeddings")) < count:  # the worker is inside the file
                    assert time.monotonic() < deadline
                    time.sleep(0.01)

            long_id, other_id, last_id = upload("long.txt", 400), upload("other.txt", 20), upload("last.txt", 20)
            kept = client.vector_stores.create(name="kept")
            attach(kept.id, long_id)
            embedding_calls_reach(3)
            client.vector_stores.files.delete(file_id=long_id, vector_store_id=kept.id)
            attach(kept.id, other_id)
            doomed = client.vector_stores.create(name="doomed")
            attach(doomed.id, long_id)
            wait_until_done(client, kept.id)
            embedding_calls_reach(len(fake.hits("/v1/embeddings")) + 3)  # now inside the doomed store's file
            client.vector_stores.delete(doomed.id)
            attach(kept.id, last_id)
            done = wait_until_done(client, kept.id)
            assert done.file_counts.completed == done.file_counts.total == 2
            assert stored_chunks(tmp_path) == {
                (kept.id, other_id): len(chunk_text(document("other.txt", 20), 100, 0)),
                (kept.id, last_id): len(chunk_text(document("last.txt", 20), 100, 0)),
            }
