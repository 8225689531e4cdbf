"""Files and vector stores end to end: the official openai client, a real server, the real MiniLM model."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import openai
import pytest
import requests
from lamina.testing import serve
from openai import OpenAI
from vector_helpers import CORPUS, QUESTIONS, vector_config


def search(client: OpenAI, store_id: str, query: str | list[str], **options: Any) -> list[Any]:
    extra = {"search_mode": options.pop("search_mode")} if "search_mode" in options else None
    return client.vector_stores.search(vector_store_id=store_id, query=query, extra_body=extra, **options).data


def test_corpus_store_counts(client: OpenAI, corpus_store: Any) -> None:
    assert corpus_store.status == "completed"
    assert corpus_store.file_counts.completed == len(CORPUS)
    assert corpus_store.file_counts.total == len(CORPUS)
    assert corpus_store.usage_bytes > 0


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_questions_find_their_document(client: OpenAI, corpus_store: Any, mode: str) -> None:
    wrong = []
    for question, expected in QUESTIONS:
        results = search(client, corpus_store.id, question, max_num_results=3, search_mode=mode)
        if not results or results[0].filename != expected:
            wrong.append((question, expected, [r.filename for r in results]))
    assert not wrong, wrong


def test_result_shape_and_order(client: OpenAI, corpus_store: Any) -> None:
    results = search(client, corpus_store.id, "honey bees in the hive", max_num_results=5)
    assert len(results) == 5
    top = results[0]
    assert top.filename == "bees.txt"
    assert top.file_id.startswith("file-")
    assert top.attributes == {"category": "nature", "year": 2017, "reviewed": True}
    assert "queen" in top.content[0].text and top.content[0].type == "text"
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert 0 < scores[0] <= 1


def test_keyword_search_matches_words(client: OpenAI, corpus_store: Any) -> None:
    results = search(client, corpus_store.id, "Colosseum gladiator", search_mode="keyword")
    assert [r.filename for r in results] == ["rome.txt"]
    # Stemming: "volcanoes" finds "volcano" in both documents that mention one.
    names = {r.filename for r in search(client, corpus_store.id, "volcanoes", search_mode="keyword")}
    assert names == {"volcanoes.md", "planets.csv"}
    assert search(client, corpus_store.id, "zeppelin", search_mode="keyword") == []


def test_list_of_queries(client: OpenAI, corpus_store: Any) -> None:
    page = client.vector_stores.search(
        vector_store_id=corpus_store.id, query=["guitar strings", "sourdough starter"], max_num_results=2
    )
    assert {r.filename for r in page.data} == {"guitar.md", "sourdough.txt"}


@pytest.mark.parametrize(
    ("filters", "allowed"),
    [
        ({"type": "eq", "key": "category", "value": "science"}, {"volcanoes.md", "planets.csv"}),
        ({"type": "gte", "key": "year", "value": 2021}, {"sourdough.txt", "tax.json", "planets.csv"}),
        ({"type": "ne", "key": "reviewed", "value": True}, {"chess.html", "planets.csv", "marathon.txt", "guitar.md"}),
        ({"type": "in", "key": "category", "value": ["music", "sport"]}, {"guitar.md", "marathon.txt"}),
        (
            {
                "type": "and",
                "filters": [
                    {"type": "eq", "key": "reviewed", "value": True},
                    {"type": "lt", "key": "year", "value": 2018},
                ],
            },
            {"bees.txt", "rome.txt"},
        ),
        (
            {
                "type": "or",
                "filters": [
                    {"type": "eq", "key": "category", "value": "history"},
                    {"type": "gt", "key": "year", "value": 2022},
                ],
            },
            {"rome.txt", "tax.json"},
        ),
    ],
)
def test_filters(client: OpenAI, corpus_store: Any, filters: dict[str, Any], allowed: set[str]) -> None:
    results = search(client, corpus_store.id, "volcano eruption", filters=filters, max_num_results=10)
    # Every matching document has one chunk, and a filtered search still fills up to the limit with every one
    # that matches the query at all (a document no more similar to it than its opposite is no result).
    similar = {r.filename for r in search(client, corpus_store.id, "volcano eruption", max_num_results=10)}
    assert {r.filename for r in results} == allowed & similar


def test_filter_nin_and_filtered_top_hit(client: OpenAI, corpus_store: Any) -> None:
    nin = {"type": "nin", "key": "category", "value": ["science"]}
    results = search(client, corpus_store.id, "How does lava reach the surface?", filters=nin)
    assert results and all(r.filename not in {"volcanoes.md", "planets.csv"} for r in results)
    hit = search(client, corpus_store.id, "lava", filters={"type": "eq", "key": "year", "value": 2019})
    assert [r.filename for r in hit] == ["volcanoes.md"]


@pytest.mark.parametrize(
    "filters",
    [
        {"type": "between", "key": "year", "value": 1},
        {"type": "eq", "key": "year"},
        {"type": "in", "key": "category", "value": "music"},
        {"type": "and", "filters": []},
        {"type": "or", "filters": [{"type": "eq", "key": "a", "value": {"nested": 1}}]},
    ],
)
def test_bad_filters_are_400(client: OpenAI, corpus_store: Any, filters: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError):
        search(client, corpus_store.id, "anything", filters=filters)


def test_score_threshold(client: OpenAI, corpus_store: Any) -> None:
    everything = search(client, corpus_store.id, "Who crossed the Rubicon?", max_num_results=10)
    cut = (everything[0].score + everything[1].score) / 2
    kept = search(client, corpus_store.id, "Who crossed the Rubicon?", ranking_options={"score_threshold": cut})
    assert [r.filename for r in kept] == ["rome.txt"]
    assert search(client, corpus_store.id, "Who crossed the Rubicon?", ranking_options={"score_threshold": 1.0}) == []
    with pytest.raises(openai.BadRequestError):
        search(client, corpus_store.id, "x", ranking_options={"score_threshold": 2})


def test_hybrid_scores_are_normalised(client: OpenAI, corpus_store: Any) -> None:
    results = search(client, corpus_store.id, "Julius Caesar Rubicon", search_mode="hybrid", max_num_results=10)
    assert results[0].filename == "rome.txt"
    assert results[0].score == pytest.approx(1.0)  # first in both rankings
    assert all(0 < r.score <= 1 for r in results)


def test_upload_and_poll_helpers(client: OpenAI) -> None:
    store = client.vector_stores.create(name="helpers", metadata={"owner": "tests"})
    single = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("notes.txt", b"Penguins live in Antarctica and cannot fly.")
    )
    assert single.status == "completed"
    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id,
        files=[("a.md", io.BytesIO(b"# Owls\nOwls hunt at night.")), ("b.txt", io.BytesIO(b"Cacti store water."))],
    )
    assert batch.status == "completed" and batch.file_counts.completed == 2 and batch.file_counts.total == 2
    in_batch = client.vector_stores.file_batches.list_files(batch_id=batch.id, vector_store_id=store.id)
    assert len(in_batch.data) == 2
    assert client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id).status == "completed"
    assert search(client, store.id, "Which birds hunt in the dark?")[0].filename == "a.md"
    retrieved = client.vector_stores.retrieve(store.id)
    assert retrieved.file_counts.completed == 3 and retrieved.metadata == {"owner": "tests"}
    updated = client.vector_stores.update(store.id, name="renamed", metadata={"owner": "me"})
    assert updated.name == "renamed" and updated.metadata == {"owner": "me"}


def test_static_chunking_and_content(client: OpenAI) -> None:
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(200))
    uploaded = client.files.create(file=("long.txt", text.encode()), purpose="assistants")
    store = client.vector_stores.create(name="chunks")
    strategy = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}}
    done = client.vector_stores.files.create_and_poll(
        vector_store_id=store.id,
        file_id=uploaded.id,
        chunking_strategy=strategy,  # type: ignore[arg-type]
    )
    assert done.status == "completed"
    assert done.chunking_strategy.static.max_chunk_size_tokens == 100  # type: ignore[union-attr]
    chunks = [part.text for part in client.vector_stores.files.content(file_id=uploaded.id, vector_store_id=store.id)]
    assert len(chunks) > 10
    assert chunks[0].startswith("Sentence number 0") and chunks[-1].endswith("topic 3.")
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.files.create(
            vector_store_id=store.id,
            file_id=uploaded.id,
            chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 80}},
        )


def test_failures_are_per_file(client: OpenAI) -> None:
    store = client.vector_stores.create(name="bad files")
    cases = {
        "empty.txt": (b"", "invalid_file"),
        "garbage.pdf": (bytes(range(256)) * 20, "invalid_file"),
        "tool.exe": (b"MZ\x90\x00binary", "unsupported_file"),
        "latin1.txt": ("caf\xe9".encode("latin-1"), "invalid_file"),
    }
    for name, (body, code) in cases.items():
        uploaded = client.files.create(file=(name, body), purpose="assistants")
        done = client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=uploaded.id)
        assert done.status == "failed", name
        assert done.last_error is not None and done.last_error.code == code, (name, done.last_error)
        assert done.last_error.message
    ok = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("fine.txt", b"Still works."))
    assert ok.status == "completed"
    counts = client.vector_stores.retrieve(store.id).file_counts
    assert (counts.failed, counts.completed, counts.total) == (4, 1, 5)
    failed = client.vector_stores.files.list(vector_store_id=store.id, filter="failed")
    assert len(failed.data) == 4


def test_pdf_is_extracted(client: OpenAI) -> None:
    pdf = minimal_pdf("Lighthouses guide ships along rocky coasts")
    store = client.vector_stores.create(name="pdf")
    done = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("light.pdf", pdf))
    assert done.status == "completed", done.last_error
    assert "Lighthouses" in search(client, store.id, "What helps ships near rocks?")[0].content[0].text


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with one line of text, written by hand (offsets computed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_attributes_update_changes_filtering(client: OpenAI) -> None:
    store = client.vector_stores.create(name="attrs")
    done = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("frogs.txt", b"Frogs lay eggs in ponds."), attributes={"lang": "en"}
    )
    only_de = {"type": "eq", "key": "lang", "value": "de"}
    assert search(client, store.id, "frogs", filters=only_de) == []
    updated = client.vector_stores.files.update(file_id=done.id, vector_store_id=store.id, attributes={"lang": "de"})
    assert updated.attributes == {"lang": "de"}
    assert [r.filename for r in search(client, store.id, "frogs", filters=only_de)] == ["frogs.txt"]


def test_deletes(client: OpenAI) -> None:
    store = client.vector_stores.create(name="deletes")
    keep = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("keep.txt", b"Whales sing."))
    drop = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("drop.txt", b"Whales breathe air.")
    )
    assert {r.filename for r in search(client, store.id, "whales")} == {"keep.txt", "drop.txt"}
    deleted = client.vector_stores.files.delete(file_id=drop.id, vector_store_id=store.id)
    assert deleted.deleted
    assert [r.filename for r in search(client, store.id, "whales")] == ["keep.txt"]
    assert [r.filename for r in search(client, store.id, "whales", search_mode="keyword")] == ["keep.txt"]
    assert client.vector_stores.retrieve(store.id).file_counts.total == 1
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(file_id=drop.id, vector_store_id=store.id)
    assert client.files.retrieve(drop.id).filename == "drop.txt"  # the file itself stays
    assert client.files.delete(drop.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(drop.id)
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError):
        search(client, store.id, "whales")
    assert keep.status == "completed"


def test_pagination(client: OpenAI) -> None:
    store = client.vector_stores.create(name="pages")
    ids = []
    for i in range(7):
        uploaded = client.files.create(file=(f"p{i}.txt", f"Page {i} text.".encode()), purpose="assistants")
        client.vector_stores.files.create(vector_store_id=store.id, file_id=uploaded.id)
        ids.append(uploaded.id)
    first = client.vector_stores.files.list(vector_store_id=store.id, limit=3, order="asc")
    assert [f.id for f in first.data] == ids[:3] and first.has_more
    second = client.vector_stores.files.list(vector_store_id=store.id, limit=3, order="asc", after=first.data[-1].id)
    assert [f.id for f in second.data] == ids[3:6]
    everything = [f.id for f in client.vector_stores.files.list(vector_store_id=store.id, limit=2)]  # auto-paging
    assert everything == ids[::-1]
    files_desc = client.files.list(limit=4)
    assert len(files_desc.data) == 4 and files_desc.has_more
    assert [f.id for f in files_desc.data][:1] == [ids[-1]]
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.list(limit=1000)
    names = [s.name for s in client.vector_stores.list(limit=100, order="desc").data]
    assert names[0] == "pages"


def test_unknown_ids_are_404(client: OpenAI, corpus_store: Any) -> None:
    calls = [
        lambda: client.vector_stores.retrieve("vs_nope"),
        lambda: client.vector_stores.files.create(vector_store_id="vs_nope", file_id="file-x"),
        lambda: client.vector_stores.files.create(vector_store_id=corpus_store.id, file_id="file-nope"),
        lambda: client.vector_stores.files.retrieve(file_id="file-nope", vector_store_id=corpus_store.id),
        lambda: client.vector_stores.file_batches.retrieve("vsfb_nope", vector_store_id=corpus_store.id),
        lambda: client.vector_stores.create(name="x", file_ids=["file-nope"]),
        lambda: client.files.retrieve("file-nope"),
        lambda: client.files.content("file-nope"),
        lambda: client.files.delete("file-nope"),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()


def test_vector_io_insert_and_query(base_url: str, client: OpenAI, minilm: str) -> None:
    store = client.vector_stores.create(name="raw")
    own = [1.0] + [0.0] * 383
    inserted = requests.post(
        f"{base_url}/vector-io/insert",
        json={
            "vector_store_id": store.id,
            "chunks": [
                {"content": "Glaciers carve valleys.", "metadata": {"source": "geo"}},
                {"content": "A precomputed vector.", "metadata": {"source": "own"}, "embedding": own},
            ],
        },
        timeout=60,
    )
    assert inserted.status_code == 200, inserted.text
    assert inserted.json()["inserted"] == 2
    by_vector = requests.post(
        f"{base_url}/vector-io/query", json={"vector_store_id": store.id, "embedding": own, "k": 1}, timeout=60
    ).json()
    assert by_vector["chunks"][0]["content"] == "A precomputed vector." and by_vector["scores"][0] == pytest.approx(1.0)
    by_text = requests.post(
        f"{base_url}/vector-io/query",
        json={"vector_store_id": store.id, "query": "how are valleys formed by ice", "k": 2, "mode": "hybrid"},
        timeout=60,
    ).json()
    assert by_text["chunks"][0]["metadata"] == {"source": "geo"}
    # Chunks inserted this way are searchable through the OpenAI endpoint, their metadata acting as attributes.
    found = search(client, store.id, "glaciers", filters={"type": "eq", "key": "source", "value": "geo"})
    assert [r.content[0].text for r in found] == ["Glaciers carve valleys."]
    wrong_dim = requests.post(
        f"{base_url}/vector-io/insert",
        json={"vector_store_id": store.id, "chunks": [{"content": "x", "embedding": [1.0, 0.0]}]},
        timeout=60,
    )
    assert wrong_dim.status_code == 400
    missing = requests.post(f"{base_url}/vector-io/query", json={"vector_store_id": store.id}, timeout=60)
    assert missing.status_code == 400
    unknown = requests.post(
        f"{base_url}/vector-io/query", json={"vector_store_id": "vs_nope", "query": "x"}, timeout=60
    )
    assert unknown.status_code == 404


def test_cancel_batch(client: OpenAI) -> None:
    store = client.vector_stores.create(name="cancel")
    text = " ".join(f"Line {i} about rivers and lakes." for i in range(3000)).encode()
    uploaded = [client.files.create(file=(f"big{i}.txt", text), purpose="assistants") for i in range(4)]
    strategy = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    batch = client.vector_stores.file_batches.create(
        vector_store_id=store.id,
        file_ids=[f.id for f in uploaded],
        chunking_strategy=strategy,  # type: ignore[arg-type]
    )
    assert batch.status == "in_progress"
    cancelled = client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert cancelled.status == "cancelled"
    assert cancelled.file_counts.cancelled + cancelled.file_counts.completed == 4
    assert cancelled.file_counts.cancelled >= 1
    for record in client.vector_stores.files.list(vector_store_id=store.id, filter="cancelled"):
        assert list(client.vector_stores.files.content(file_id=record.id, vector_store_id=store.id)) == []


def test_no_match_at_all_is_no_result(minilm: str) -> None:
    """The nearest of unrelated chunks is still unrelated: no score-0 hits, in any mode, fused here or by the
    provider (`plain` declares no hybrid, so the router fuses)."""
    config = vector_config(minilm)
    config["providers"]["vector_io"].append(
        {"id": "plain", "type": "inline::hnswlib", "config": {"capabilities": ["vector", "keyword"]}}
    )
    question = "Why do penguins huddle?"
    with serve(config) as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        v = np.array(client.embeddings.create(model="st/all-MiniLM-L6-v2", input=question).data[0].embedding)
        other = np.roll(v, 1) - v * (np.roll(v, 1) @ v) / (v @ v)  # orthogonal to v
        chunks = {
            "Penguins huddle against the cold.": v,
            "Tax refunds arrive in spring.": -v,  # cosine -1: clamped, it would score 0.0
            "Guitar strings go dull.": -v + 0.5 * other,  # cosine < 0
        }
        for provider in ("hnswlib", "plain"):
            store = client.vector_stores.create(name=provider, extra_body={"provider_id": provider})
            inserted = requests.post(
                f"{url}/vector-io/insert",
                json={
                    "vector_store_id": store.id,
                    "chunks": [{"content": c, "embedding": e.tolist()} for c, e in chunks.items()],
                },
                timeout=60,
            )
            assert inserted.status_code == 200, inserted.text
            for mode in ("vector", "hybrid"):
                found = search(client, store.id, question, search_mode=mode, max_num_results=10)
                assert [r.content[0].text for r in found] == ["Penguins huddle against the cold."], (provider, mode)
                assert found[0].score > 0.5
            assert search(client, store.id, "zeppelin airship", search_mode="keyword") == []
            assert search(client, store.id, ["zeppelin", "hovercraft banjo"], search_mode="keyword") == []
            raw = requests.post(
                f"{url}/vector-io/query",
                json={"vector_store_id": store.id, "embedding": (-v).tolist(), "k": 3},
                timeout=60,
            ).json()
            assert raw["chunks"][0]["content"] == "Tax refunds arrive in spring." and min(raw["scores"]) > 0
            assert "Penguins huddle against the cold." not in [c["content"] for c in raw["chunks"]]
