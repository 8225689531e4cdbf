"""remote::pgvector against brute force on a real PostgreSQL 16 with pgvector (the pgserver wheel): vector
search (recall and scores), filters (exactly the router's `search.matches`), keyword search (exactly the chunks
sharing a word), hybrid (exactly `search.fuse` of the provider's own rankings), and a restart keeps everything."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from lamina.apis.vector_io.provider import Chunk, Hit
from lamina.apis.vector_io.search import fuse, hybrid_depth, matches
from lamina.apis.vector_io.types import Comparison, Compound
from lamina.errors import LaminaError
from lamina_vector_pgvector import PgvectorConfig
from lamina_vector_pgvector.store import PgvectorVectorIO
from pydantic import TypeAdapter

DIMENSION = 16
WORDS = ["trout", "pine", "moss", "fern", "elk", "oak", "kelp", "wren", "heron", "birch"]
FILTER = TypeAdapter(Comparison | Compound)
FILTERS: list[dict[str, Any]] = [
    {"type": "eq", "key": "kind", "value": "b"},
    {"type": "ne", "key": "kind", "value": "b"},  # chunks without `kind` pass
    {"type": "eq", "key": "flag", "value": True},  # True == 1 and 1.0, as in Python
    {"type": "eq", "key": "part", "value": 2},
    {"type": "in", "key": "part", "value": [1, 3, "3"]},
    {"type": "nin", "key": "kind", "value": ["a", "c"]},
    {"type": "gt", "key": "part", "value": 2.5},
    {"type": "lte", "key": "name", "value": "mé"},  # strings by code point
    {"type": "gt", "key": "flag", "value": False},  # an order on booleans matches nothing
    {
        "type": "or",
        "filters": [{"type": "gte", "key": "part", "value": 4}, {"type": "eq", "key": "kind", "value": "c"}],
    },
    {"type": "and", "filters": [{"type": "ne", "key": "part", "value": 1}, {"type": "lt", "key": "part", "value": 4}]},
]


def attributes_of(n: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if n % 7:
        attributes["kind"] = "abc"[n % 3]
    if n % 5:
        attributes["part"] = n % 5 if n % 2 else float(n % 5)
    attributes["flag"] = [True, 1, 0, False, 1.0][n % 5]
    attributes["name"] = ["mé", "ma", "mz", "Mb", "m"][n % 5]
    return attributes


def corpus(count: int, seed: int = 7) -> tuple[list[Chunk], list[list[float]]]:
    rng = random.Random(seed)
    centres = [[rng.gauss(0, 1) for _ in range(DIMENSION)] for _ in range(8)]
    chunks, vectors = [], []
    for n in range(count):
        centre = centres[n % len(centres)]
        vectors.append([c + rng.gauss(0, 0.4) for c in centre])
        text = " ".join(rng.choice(WORDS) for _ in range(3)) + f" filler{n}"
        chunks.append(Chunk(content=text, file_id=f"file-{n % 9}", metadata={"n": n}, attributes=attributes_of(n)))
    return chunks, vectors


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


# One event loop for the module, so that the provider and the loaded store are made once for every test.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider(pgvector_url: str) -> AsyncIterator[PgvectorVectorIO]:
    # Stores of 100+ chunks get their HNSW index (the first insert of 250 builds it, later ones add to it).
    store = await PgvectorVectorIO.open(pgvector_url, PgvectorConfig(exact_below=100), "pgvector (test)")
    yield store
    await store.close()


async def load(provider: PgvectorVectorIO) -> tuple[str, list[Chunk], list[list[float]], list[str]]:
    store_id = f"vs_{random.getrandbits(48):012x}"
    await provider.create_store(store_id)
    chunks, vectors = corpus(600)
    ids = []
    for start in range(0, len(chunks), 250):
        ids += await provider.insert(store_id, chunks[start : start + 250], vectors[start : start + 250])
    return store_id, chunks, vectors, ids


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def loaded(provider: PgvectorVectorIO) -> tuple[str, list[Chunk], list[list[float]], list[str]]:
    """A store the tests only read."""
    return await load(provider)


def brute(query: list[float], vectors: list[list[float]], ids: list[str], allowed: set[str] | None) -> list[str]:
    scored = [(cosine(query, v), i) for v, i in zip(vectors, ids, strict=True) if allowed is None or i in allowed]
    return [i for _, i in sorted(scored, key=lambda pair: -pair[0])]


async def test_vector_search_against_brute_force(provider: PgvectorVectorIO, loaded: Any) -> None:
    store_id, chunks, vectors, ids = loaded
    assert await provider.count(store_id) == 600
    rng = random.Random(1)
    found = wanted = 0
    for _ in range(20):
        query = [v + rng.gauss(0, 0.3) for v in rng.choice(vectors)]
        hits = await provider.query(store_id, vector=query, text=None, k=10, filters=None, mode="vector")
        assert len(hits) == 10
        exact = set(brute(query, vectors, ids, None)[:10])
        found += len(exact & {hit.id for hit in hits})
        wanted += 10
        by_id = dict(zip(ids, vectors, strict=True))
        for hit in hits:
            assert hit.score == pytest.approx(cosine(query, by_id[hit.id]), abs=1e-5)
        assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
        first = hits[0]
        assert (first.content, first.metadata, first.attributes) == (
            chunks[ids.index(first.id)].content,
            chunks[ids.index(first.id)].metadata,
            chunks[ids.index(first.id)].attributes,
        )
    assert found / wanted >= 0.9
    # The search the provider runs walks the store's own HNSW index.
    plan = await provider.pool.fetch(
        f"EXPLAIN SELECT c.id FROM lamina_vector_chunks c WHERE c.store_id = '{store_id}' "
        f"ORDER BY c.embedding::vector({DIMENSION}) <=> CAST($1::text AS vector({DIMENSION})) LIMIT 10",
        str(vectors[0]),
    )
    assert f"lamina_hnsw_{store_id}" in "\n".join(row[0] for row in plan)


@pytest.mark.parametrize("raw", FILTERS, ids=lambda f: str(f)[:60])
async def test_filters_are_the_routers(provider: PgvectorVectorIO, loaded: Any, raw: dict[str, Any]) -> None:
    store_id, chunks, vectors, ids = loaded
    condition = FILTER.validate_python(raw)
    allowed = {i for i, chunk in zip(ids, chunks, strict=True) if matches(condition, chunk.attributes)}
    query = vectors[3]
    # k beyond the matches: every matching chunk, none other, in exact order.
    everything = await provider.query(store_id, vector=query, text=None, k=700, filters=condition, mode="vector")
    assert {hit.id for hit in everything} == allowed
    assert [hit.id for hit in everything] == brute(query, vectors, ids, allowed)
    top = await provider.query(store_id, vector=query, text=None, k=10, filters=condition, mode="vector")
    assert len(top) == min(10, len(allowed)) and {hit.id for hit in top} <= allowed
    words = await provider.query(store_id, vector=None, text="trout kelp", k=700, filters=condition, mode="keyword")
    assert {hit.id for hit in words} == {
        i for i in allowed if {"trout", "kelp"} & set(chunks[ids.index(i)].content.split())
    }


async def test_keyword_search_finds_exactly_the_chunks_sharing_a_word(provider: PgvectorVectorIO, loaded: Any) -> None:
    store_id, chunks, _, ids = loaded
    hits = await provider.query(store_id, vector=None, text="Heron, WREN!", k=1000, filters=None, mode="keyword")
    assert {hit.id for hit in hits} == {
        i for i, c in zip(ids, chunks, strict=True) if {"heron", "wren"} & set(c.content.split())
    }
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    # A chunk holding both words (or one twice) ranks above one holding a single word once.
    best = chunks[ids.index(hits[0].id)].content.split()
    assert sum(word in ("heron", "wren") for word in best) >= 2
    assert await provider.query(store_id, vector=None, text="?!", k=5, filters=None, mode="keyword") == []
    assert await provider.query(store_id, vector=None, text="zebra", k=5, filters=None, mode="keyword") == []


@pytest.mark.parametrize("raw", [None, FILTERS[1], FILTERS[9]], ids=["none", "ne", "or"])
async def test_hybrid_is_fusion_of_the_two_rankings(provider: PgvectorVectorIO, loaded: Any, raw: Any) -> None:
    store_id, _, vectors, _ = loaded
    condition = None if raw is None else FILTER.validate_python(raw)
    query, text, k = vectors[10], "pine moss", 10
    depth = hybrid_depth(k)
    rankings = [
        await provider.query(store_id, vector=query, text=None, k=depth, filters=condition, mode="vector"),
        await provider.query(store_id, vector=None, text=text, k=depth, filters=condition, mode="keyword"),
    ]
    expected = fuse(rankings)[:k]
    hybrid = await provider.query(store_id, vector=query, text=text, k=k, filters=condition, mode="hybrid")

    def view(hits: list[Hit]) -> list[tuple[str, float]]:
        return sorted(((hit.id, round(hit.score, 9)) for hit in hits), key=lambda pair: (-pair[1], pair[0]))

    assert view(hybrid) == view(expected)
    assert hybrid[0].score == pytest.approx(expected[0].score)


async def test_writes_deletes_and_errors(provider: PgvectorVectorIO) -> None:
    store_id, chunks, vectors, ids = await load(provider)
    assert await provider.file_chunks(store_id, "file-2") == [c.content for c in chunks if c.file_id == "file-2"]
    await provider.update_attributes(store_id, "file-2", {"kind": "z"})
    only = FILTER.validate_python({"type": "eq", "key": "kind", "value": "z"})
    hits = await provider.query(store_id, vector=vectors[0], text=None, k=700, filters=only, mode="vector")
    assert {hit.id for hit in hits} == {i for i, c in zip(ids, chunks, strict=True) if c.file_id == "file-2"}
    await provider.delete_file_chunks(store_id, "file-2")
    assert await provider.file_chunks(store_id, "file-2") == []
    assert await provider.query(store_id, vector=vectors[0], text=None, k=10, filters=only, mode="vector") == []
    with pytest.raises(LaminaError) as wrong:
        await provider.insert(store_id, [Chunk(content="x")], [[1.0, 2.0]])
    assert wrong.value.status == 400 and "16" in wrong.value.message
    with pytest.raises(LaminaError):
        await provider.insert(store_id, [Chunk(content="x")], [[math.nan] * DIMENSION])
    with pytest.raises(LaminaError):
        await provider.query(store_id, vector=[1.0], text=None, k=3, filters=None, mode="vector")
    await provider.delete_store(store_id)
    assert await provider.count(store_id) == 0
    assert await provider.query(store_id, vector=vectors[0], text=None, k=3, filters=None, mode="vector") == []


async def test_a_new_process_finds_the_stores(pgvector_url: str, loaded: Any, provider: PgvectorVectorIO) -> None:
    store_id, _, vectors, ids = loaded
    before = await provider.query(store_id, vector=vectors[5], text="elk", k=10, filters=None, mode="hybrid")
    reopened = await PgvectorVectorIO.open(pgvector_url, PgvectorConfig(exact_below=100), "pgvector (test)")
    try:
        assert await reopened.count(store_id) == len(ids)
        after = await reopened.query(store_id, vector=vectors[5], text="elk", k=10, filters=None, mode="hybrid")
        assert [(h.id, h.score) for h in after] == [(h.id, h.score) for h in before]
    finally:
        await reopened.close()
