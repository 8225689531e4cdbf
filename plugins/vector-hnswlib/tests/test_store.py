"""The inline::hnswlib provider through its own Python API: random vectors, no model, no server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lamina.apis.vector_io.provider import Chunk, Hit
from lamina.apis.vector_io.search import matches
from lamina.apis.vector_io.types import Comparison, Compound
from lamina.errors import LaminaError
from lamina_vector_hnswlib import HnswlibConfig
from lamina_vector_hnswlib import store as store_module
from lamina_vector_hnswlib.store import HnswlibVectorIO

DIM = 32


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, DIM)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


async def open_store(root: Path, **config: object) -> HnswlibVectorIO:
    return await HnswlibVectorIO.open(root, HnswlibConfig(save_interval_seconds=3600, **config))


async def fill(provider: HnswlibVectorIO, store: str, data: np.ndarray, file_id: str = "file-a") -> list[str]:
    chunks = [Chunk(f"chunk {i} of {file_id}", file_id, {"i": i}, {"n": i}) for i in range(len(data))]
    return await provider.insert(store, chunks, data)


async def by_vector(provider: HnswlibVectorIO, store: str, vector: list[float], k: int) -> list[Hit]:
    return await provider.query(store, vector=vector, text=None, k=k, filters=None, mode="vector")


async def by_text(provider: HnswlibVectorIO, store: str, text: str, k: int) -> list[Hit]:
    return await provider.query(store, vector=None, text=text, k=k, filters=None, mode="keyword")


async def top1(provider: HnswlibVectorIO, store: str, data: np.ndarray) -> list[str]:
    return [(await by_vector(provider, store, row.tolist(), 1))[0].content for row in data]


async def test_insert_query_and_growth(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    data = vectors(3000)  # beyond the initial capacity of 1024: the index is resized
    ids = await fill(provider, "vs_a", data)
    assert len(set(ids)) == 3000 and await provider.count("vs_a") == 3000
    labels, scores = await provider.knn("vs_a", data[:200], 1)
    assert (labels[:, 0] == np.array(ids[:200], dtype=np.uint64)).mean() > 0.98
    assert scores[:, 0] == pytest.approx(np.ones(200), abs=1e-4)
    hit = (await by_vector(provider, "vs_a", data[5].tolist(), 3))[0]
    assert hit.content == "chunk 5 of file-a" and hit.metadata == {"i": 5} and hit.file_id == "file-a"
    assert hit.id == ids[5] and hit.attributes == {"n": 5}
    await provider.close()


async def test_stores_are_separate_and_dimensions_checked(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    await provider.create_store("vs_b")
    await fill(provider, "vs_a", vectors(10, 1))
    await fill(provider, "vs_b", vectors(10, 2))
    assert all(
        hit.content.endswith("file-a") for hit in await by_vector(provider, "vs_b", vectors(1, 1)[0].tolist(), 10)
    )
    with pytest.raises(LaminaError) as wrong:
        await provider.insert("vs_a", [Chunk("x")], np.ones((1, DIM + 1)))
    assert wrong.value.status == 400
    with pytest.raises(LaminaError):
        await provider.knn("vs_a", np.ones(DIM + 1), 1)
    with pytest.raises(LaminaError):
        await provider.insert("vs_a", [Chunk("x")], np.full((1, DIM), np.nan))
    await provider.delete_store("vs_b")
    assert await provider.count("vs_b") == 0
    assert await by_text(provider, "vs_b", "chunk", 5) == []
    await provider.close()


async def test_deletes_are_honoured_at_once(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    data_a, data_b = vectors(50, 1), vectors(50, 2)
    await fill(provider, "vs_a", data_a, "file-a")
    await fill(provider, "vs_a", data_b, "file-b")
    await provider.delete_file_chunks("vs_a", "file-b")
    assert await provider.count("vs_a") == 50
    hits = await by_vector(provider, "vs_a", data_b[0].tolist(), 100)
    assert len(hits) == 50 and all(h.file_id == "file-a" for h in hits)
    assert all(h.file_id == "file-a" for h in await by_text(provider, "vs_a", "file b", 100))
    assert await provider.file_chunks("vs_a", "file-b") == []
    await provider.delete_file_chunks("vs_a", "file-a")
    assert await by_vector(provider, "vs_a", data_a[0].tolist(), 5) == []
    await provider.close()


async def test_keyword_search(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    texts = ["Ravens are clever birds", "Bread needs yeast", "A raven stole my bread", "Nothing here"]
    await provider.insert("vs_a", [Chunk(t, None, {"n": i}) for i, t in enumerate(texts)], vectors(4))
    hits = await by_text(provider, "vs_a", "ravens' BREAD?", 10)
    assert hits[0].content == "A raven stole my bread"  # both words (stemmed) beat one
    assert {h.content for h in hits} == set(texts[:3])
    assert all(0 < h.score < 1 for h in hits)
    assert await by_text(provider, "vs_a", '"); DROP TABLE chunks; --', 10) == []
    assert await by_text(provider, "vs_a", "   ", 10) == []
    await provider.close()


async def test_restart_keeps_everything(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    data = vectors(500)
    ids = await fill(provider, "vs_a", data)
    await provider.delete_chunks("vs_a", [int(i) for i in ids[1:4]])
    before = await top1(provider, "vs_a", data[10:20])
    await provider.close()
    provider = await open_store(tmp_path)
    assert await provider.count("vs_a") == 497
    assert await top1(provider, "vs_a", data[10:20]) == before
    assert {h.id for h in await by_vector(provider, "vs_a", data[1].tolist(), 500)}.isdisjoint(ids[1:4])
    await provider.close()


@pytest.mark.parametrize("damage", ["deleted", "garbled", "truncated", "stale"])
async def test_index_file_is_rebuilt_or_reconciled(tmp_path: Path, damage: str) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    data = vectors(400)
    await fill(provider, "vs_a", data[:300])
    await provider.save("vs_a")
    index_file = tmp_path / "indexes" / "vs_a.bin"
    assert index_file.exists()
    if damage == "stale":
        # Changes after the last save, then a crash (no close, no save): the file lags behind SQLite.
        await fill(provider, "vs_a", data[300:], "file-b")
        await provider.delete_chunks("vs_a", [1, 2])
        await provider.db.close()
        if provider.saver:
            provider.saver.cancel()
    else:
        await provider.close()
        if damage == "deleted":
            index_file.unlink()
        elif damage == "garbled":
            index_file.write_bytes(os.urandom(index_file.stat().st_size))
        else:
            index_file.write_bytes(index_file.read_bytes()[:1000])
    provider = await open_store(tmp_path)
    expected = 398 if damage == "stale" else 300
    assert await provider.count("vs_a") == expected
    searched = data[300:310] if damage == "stale" else data[:10]
    labels, _ = await provider.knn("vs_a", searched, 1)
    contents = [h.content for h in await provider._hits([int(x) for x in labels[:, 0]], [1.0] * 10)]
    suffix = "file-b" if damage == "stale" else "file-a"
    assert sum(c.endswith(suffix) for c in contents) >= 9
    if damage == "stale":
        assert {h.id for h in await by_vector(provider, "vs_a", data[1].tolist(), 398)}.isdisjoint({"1", "2"})
    await provider.close()
    # The repaired index was saved with a fresh record, so the next start loads it as is.
    provider = await open_store(tmp_path)
    assert await provider.count("vs_a") == expected
    await provider.close()


async def test_empty_store_queries(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    assert await by_vector(provider, "vs_a", [0.1] * DIM, 5) == []
    await fill(provider, "vs_a", vectors(3))
    assert len(await by_vector(provider, "vs_a", [0.1] * DIM, 50)) == 3  # k above the count
    await provider.close()


def random_filter(rng: np.random.Generator, depth: int = 0) -> Comparison | Compound:
    if depth < 2 and rng.random() < 0.3:
        subs = [random_filter(rng, depth + 1) for _ in range(int(rng.integers(1, 4)))]
        return Compound(type=str(rng.choice(["and", "or"])), filters=subs)  # type: ignore[arg-type]
    kind = str(rng.choice(["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]))
    key = str(rng.choice(["colour", "year", "ok", "missing", 'odd"key.x']))
    pool: list[str | float | bool] = ["red", "blue", "b", 2019, 2020.5, 1, 0, True, False]
    if kind in ("in", "nin"):
        value: Any = [pool[i] for i in rng.choice(len(pool), int(rng.integers(0, 4)), replace=False)]
    else:
        value = pool[int(rng.integers(len(pool)))]
    return Comparison(type=kind, key=key, value=value)  # type: ignore[arg-type]


def random_attributes(rng: np.random.Generator) -> dict[str, Any]:
    values: list[Any] = ["red", "blue", "a", 2019, 2020.5, 2021, 1, 0, True, False, None, [1], {"x": 1}]
    keys = ["colour", "year", "ok", 'odd"key.x']
    return {k: values[int(rng.integers(len(values)))] for k in keys if rng.random() < 0.7}


async def test_filters_in_sql_agree_with_the_routers(tmp_path: Path) -> None:
    """The SQL the provider filters with keeps exactly the chunks `search.matches` keeps."""
    rng = np.random.default_rng(7)
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    attributes = [random_attributes(rng) for _ in range(300)]
    ids = await provider.insert("vs_a", [Chunk(f"c{i}", None, {}, a) for i, a in enumerate(attributes)], vectors(300))
    for _ in range(300):
        condition = random_filter(rng)
        expected = {ids[i] for i, a in enumerate(attributes) if matches(condition, a)}
        assert {str(i) for i in await provider._allowed("vs_a", condition)} == expected, condition
    await provider.close()


@pytest.mark.parametrize(
    ("files", "exact_max"),
    [
        (3, 4096),  # few chunks pass: compared with exactly theirs
        (40, 100),  # half pass: hnswlib's neighbours, more of them, then the filter
        (40, 100_000),  # exact again, as a reference for the next
    ],
)
@pytest.mark.parametrize("share", ["even", "rare"])
async def test_filtered_vector_and_keyword_queries(
    tmp_path: Path, files: int, exact_max: int, share: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "EXACT_MAX", exact_max)
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    data = vectors(files * 150, 3)
    for f in range(files):
        part = data[f * 150 : (f + 1) * 150]
        passes = f % 2 == 0 if share == "even" else f == 0  # half the files, or one in 40 (hnswlib's filter)
        chunks = [Chunk(f"river {i} of f{f}", f"f{f}", {}, {"even": passes, "f": f}) for i in range(150)]
        await provider.insert("vs_a", chunks, part)
    even = Comparison(type="eq", key="even", value=True)
    wanted = [f for f in range(files) if (f % 2 == 0 if share == "even" else f == 0)]
    for row in (0, 151, 302):
        hits = await provider.query("vs_a", vector=data[row].tolist(), text=None, k=10, filters=even, mode="vector")
        assert len(hits) == 10 and all(h.attributes["even"] is True for h in hits)
        allowed = np.concatenate([data[f * 150 : (f + 1) * 150] for f in wanted])
        best = np.sort(allowed @ data[row])[::-1][:10]
        assert [h.score for h in hits] == pytest.approx(best.tolist(), abs=1e-3)
    keyword = await provider.query("vs_a", vector=None, text="river", k=500, filters=even, mode="keyword")
    assert len(keyword) == min(500, len(wanted) * 150) and all(h.file_id in {f"f{f}" for f in wanted} for h in keyword)
    hybrid = await provider.query("vs_a", vector=data[1].tolist(), text="river", k=5, filters=even, mode="hybrid")
    assert len(hybrid) == 5 and all(h.attributes["even"] is True for h in hybrid)
    await provider.update_attributes("vs_a", "f0", {"even": False})
    if share == "rare":
        return await provider.close()
    hits = await provider.query("vs_a", vector=data[0].tolist(), text=None, k=10, filters=even, mode="vector")
    assert all(h.file_id != "f0" for h in hits)
    await provider.close()


async def test_two_processes_share_one_database(tmp_path: Path) -> None:
    """Two providers on one folder (as two `lamina run` would be): ids never collide, each sees the other's
    inserts and deletes."""
    first, second = await open_store(tmp_path), await open_store(tmp_path)
    await first.create_store("vs_a")
    data = vectors(200, 4)
    ids_first = await fill(first, "vs_a", data[:100], "file-a")
    ids_second = await fill(second, "vs_a", data[100:], "file-b")
    assert not set(ids_first) & set(ids_second)
    assert (await by_vector(first, "vs_a", data[150].tolist(), 1))[0].id == ids_second[50]
    assert await first.count("vs_a") == 200
    await second.delete_file_chunks("vs_a", "file-a")
    assert await first.count("vs_a") == 100
    assert all(h.file_id == "file-b" for h in await by_vector(first, "vs_a", data[0].tolist(), 20))
    await first.close()
    await second.close()
