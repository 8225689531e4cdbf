"""The inline::hnswlib provider through its own Python API: random vectors, no model, no server."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from lamina.errors import LaminaError
from lamina_vector_hnswlib import HnswlibConfig
from lamina_vector_hnswlib.store import HnswlibVectorIO

DIM = 32


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, DIM)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


async def open_store(root: Path, **config: object) -> HnswlibVectorIO:
    return await HnswlibVectorIO.open(root, HnswlibConfig(save_interval_seconds=3600, **config))


async def fill(provider: HnswlibVectorIO, store: str, data: np.ndarray, file_id: str = "file-a") -> list[int]:
    chunks = [(f"chunk {i} of {file_id}", {"file_id": file_id, "i": i}) for i in range(len(data))]
    return await provider.insert(store, chunks, data)


async def top1(provider: HnswlibVectorIO, store: str, data: np.ndarray) -> list[str]:
    return [(await provider.query_vector(store, row.tolist(), 1))[0].content for row in data]


async def test_insert_query_and_growth(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    data = vectors(3000)  # beyond the initial capacity of 1024: the index is resized
    ids = await fill(provider, "vs_a", data)
    assert len(set(ids)) == 3000 and await provider.count("vs_a") == 3000
    labels, scores = await provider.knn("vs_a", data[:200], 1)
    assert (labels[:, 0] == np.array(ids[:200])).mean() > 0.98
    assert scores[:, 0] == pytest.approx(np.ones(200), abs=1e-4)
    hit = (await provider.query_vector("vs_a", data[5].tolist(), 3))[0]
    assert hit.content == "chunk 5 of file-a" and hit.metadata == {"file_id": "file-a", "i": 5}
    await provider.close()


async def test_stores_are_separate_and_dimensions_checked(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    await provider.create_store("vs_b")
    await fill(provider, "vs_a", vectors(10, 1))
    await fill(provider, "vs_b", vectors(10, 2))
    assert all(
        hit.content.endswith("file-a") for hit in await provider.query_vector("vs_b", vectors(1, 1)[0].tolist(), 10)
    )
    with pytest.raises(LaminaError) as wrong:
        await provider.insert("vs_a", [("x", {})], np.ones((1, DIM + 1)))
    assert wrong.value.status == 400
    with pytest.raises(LaminaError):
        await provider.knn("vs_a", np.ones(DIM + 1), 1)
    with pytest.raises(LaminaError):
        await provider.insert("vs_a", [("x", {})], np.full((1, DIM), np.nan))
    await provider.delete_store("vs_b")
    assert await provider.count("vs_b") == 0
    assert await provider.query_keyword("vs_b", "chunk", 5) == []
    await provider.close()


async def test_deletes_are_honoured_at_once(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    data_a, data_b = vectors(50, 1), vectors(50, 2)
    await fill(provider, "vs_a", data_a, "file-a")
    await fill(provider, "vs_a", data_b, "file-b")
    await provider.delete_file_chunks("vs_a", "file-b")
    assert await provider.count("vs_a") == 50
    hits = await provider.query_vector("vs_a", data_b[0].tolist(), 100)
    assert len(hits) == 50 and all(h.metadata["file_id"] == "file-a" for h in hits)
    assert all(h.metadata["file_id"] == "file-a" for h in await provider.query_keyword("vs_a", "file b", 100))
    assert await provider.file_chunks("vs_a", "file-b") == []
    await provider.delete_file_chunks("vs_a", "file-a")
    assert await provider.query_vector("vs_a", data_a[0].tolist(), 5) == []
    await provider.close()


async def test_keyword_search(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    texts = ["Ravens are clever birds", "Bread needs yeast", "A raven stole my bread", "Nothing here"]
    await provider.insert("vs_a", [(t, {"n": i}) for i, t in enumerate(texts)], vectors(4))
    hits = await provider.query_keyword("vs_a", "ravens' BREAD?", 10)
    assert hits[0].content == "A raven stole my bread"  # both words (stemmed) beat one
    assert {h.content for h in hits} == set(texts[:3])
    assert all(0 < h.score < 1 for h in hits)
    assert await provider.query_keyword("vs_a", '"); DROP TABLE chunks; --', 10) == []
    assert await provider.query_keyword("vs_a", "   ", 10) == []
    await provider.close()


async def test_restart_keeps_everything(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    data = vectors(500)
    await fill(provider, "vs_a", data)
    await provider.delete_chunks("vs_a", [1, 2, 3])
    before = await top1(provider, "vs_a", data[10:20])
    await provider.close()
    provider = await open_store(tmp_path)
    assert await provider.count("vs_a") == 497
    assert await top1(provider, "vs_a", data[10:20]) == before
    assert {h.id for h in await provider.query_vector("vs_a", data[1].tolist(), 500)}.isdisjoint({1, 2, 3})
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
        assert {h.id for h in await provider.query_vector("vs_a", data[1].tolist(), 398)}.isdisjoint({1, 2})
    await provider.close()
    # The repaired index was saved with a fresh record, so the next start loads it as is.
    provider = await open_store(tmp_path)
    assert await provider.count("vs_a") == expected
    await provider.close()


async def test_empty_store_queries(tmp_path: Path) -> None:
    provider = await open_store(tmp_path)
    await provider.create_store("vs_a")
    assert await provider.query_vector("vs_a", [0.1] * DIM, 5) == []
    await fill(provider, "vs_a", vectors(3))
    assert len(await provider.query_vector("vs_a", [0.1] * DIM, 50)) == 3  # k above the count
    await provider.close()
