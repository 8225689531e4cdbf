"""remote::pgvector against inline::hnswlib on the same data, in one run, through each provider's `query()`.

    python bench/pgvector.py                     # 100k x 384; starts a PostgreSQL 16 + pgvector (pgserver)
    python bench/pgvector.py --n 20000           # quicker
    python bench/pgvector.py --url postgresql://...   # your own PostgreSQL with pgvector (a scratch database)

Data as bench/vector.py: seeded 384-dim unit vectors from a Gaussian mixture, queries from the same mixture,
exact ground truth by numpy. For each provider: insert rate, then one query per call (as a server does), p50
latency and recall@10 per ef_search; then filtered search (10% and 50% of the chunks pass) against unfiltered
at the same ef_search, and filtered recall against filtered ground truth.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from vector import exact_top_k, mixture

DIM = 384
K = 10


def recall_of(found: list[list[int]], truth: np.ndarray) -> float:
    return sum(len(set(row) & set(want.tolist())) for row, want in zip(found, truth, strict=True)) / truth.size


async def timed_queries(provider: Any, store_id: str, queries: np.ndarray, filters: Any, ids: list[str]) -> Any:
    """One query per call; (p50 ms, recall rows as data indexes)."""
    index_of = {chunk_id: i for i, chunk_id in enumerate(ids)}
    latencies, found = [], []
    for query in queries:
        vector = query.tolist()
        started = time.perf_counter()
        hits = await provider.query(store_id, vector=vector, text=None, k=K, filters=filters, mode="vector")
        latencies.append((time.perf_counter() - started) * 1000)
        found.append([index_of[hit.id] for hit in hits])
    return statistics.median(latencies), found


async def fill(provider: Any, store_id: str, data: np.ndarray, batch: int) -> tuple[list[str], float]:
    from lamina.apis.vector_io.provider import Chunk

    await provider.create_store(store_id)
    ids: list[str] = []
    started = time.perf_counter()
    for start in range(0, len(data), batch):
        chunks = [
            Chunk(content=f"chunk {i}", file_id=f"file-{i % 100}", attributes={"part": i % 10})
            for i in range(start, min(start + batch, len(data)))
        ]
        ids += await provider.insert(store_id, chunks, data[start : start + batch])
    return ids, len(data) / (time.perf_counter() - started)


async def bench(args: argparse.Namespace, url: str) -> None:
    from lamina.apis.vector_io.types import Comparison
    from lamina_vector_hnswlib import HnswlibConfig
    from lamina_vector_hnswlib.store import HnswlibVectorIO
    from lamina_vector_pgvector import PgvectorConfig
    from lamina_vector_pgvector.store import PgvectorVectorIO

    rng = np.random.default_rng(args.seed)
    centers = rng.normal(0, 1, (args.clusters, DIM)).astype(np.float32)
    data = mixture(rng, centers, args.n, args.spread)
    queries = mixture(rng, centers, args.queries, args.spread)
    truth = exact_top_k(data, queries, K)
    parts = np.arange(args.n) % 10
    filters = {
        "10%": (Comparison(type="eq", key="part", value=3), parts == 3),
        "50%": (Comparison(type="lt", key="part", value=5), parts < 5),
    }
    filtered_truth = {}
    for name, (_, mask) in filters.items():
        subset = np.flatnonzero(mask)
        filtered_truth[name] = subset[exact_top_k(data[subset], queries, K)]
    print(f"data: {args.n} x {DIM} ({args.clusters}-cluster mixture), {args.queries} queries, k={K}")

    rows: list[tuple[str, ...]] = []
    folder = Path(tempfile.mkdtemp(prefix="lamina-bench-hnswlib-"))
    try:
        hnsw = await HnswlibVectorIO.open(folder, HnswlibConfig(ef_search=64, save_interval_seconds=3600))
        ids, rate = await fill(hnsw, "vs_bench", data, 1000)
        print(f"inline::hnswlib: inserted at {rate:,.0f} chunks/s")
        p50, found = await timed_queries(hnsw, "vs_bench", queries, None, ids)
        extra = []
        for name, (condition, _) in filters.items():
            fp50, ffound = await timed_queries(hnsw, "vs_bench", queries, condition, ids)
            extra.append(f"{fp50:.2f} ms ({fp50 / p50:.2f}x), recall {recall_of(ffound, filtered_truth[name]):.3f}")
        rows.append(("inline::hnswlib", "64", f"{recall_of(found, truth):.3f}", f"{p50:.2f}", *extra))
        print("  " + " | ".join(rows[-1]))
        await hnsw.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    store_id = f"vs_bench{int(time.time())}"
    # exact_below = n: the last insert builds the index in bulk over everything, as a bulk import would.
    config = PgvectorConfig(m=args.m, ef_construction=args.ef_construction, ef_search=args.ef[0], exact_below=args.n)
    pg = await PgvectorVectorIO.open(url, config, "bench")
    try:
        ids, rate = await fill(pg, store_id, data, args.batch)
        print(
            f"remote::pgvector: inserted at {rate:,.0f} chunks/s, HNSW (m={args.m}, "
            f"ef_construction={args.ef_construction}) built in bulk by the last insert"
        )
        await pg.close()
        for ef in args.ef:
            pg = await PgvectorVectorIO.open(url, config.model_copy(update={"ef_search": ef}), "bench")
            await timed_queries(pg, store_id, queries[:20], None, ids)  # warm the cache
            p50, found = await timed_queries(pg, store_id, queries, None, ids)
            cells = [("remote::pgvector", str(ef), f"{recall_of(found, truth):.3f}", f"{p50:.2f}")]
            extra = []
            for name, (condition, _) in filters.items():
                fp50, ffound = await timed_queries(pg, store_id, queries, condition, ids)
                extra.append(f"{fp50:.2f} ms ({fp50 / p50:.2f}x), recall {recall_of(ffound, filtered_truth[name]):.3f}")
            print("  " + " | ".join((*cells[0], *extra)))
            rows.append((*cells[0], *extra))
            floor = []
            for _ in range(len(queries)):
                started = time.perf_counter()
                await pg.pool.fetchval("SELECT 1")
                floor.append((time.perf_counter() - started) * 1000)
            print(f"    round-trip floor (SELECT 1 on the same pool): p50 {statistics.median(floor):.2f} ms")
            await pg.close()
        pg = await PgvectorVectorIO.open(url, config, "bench")
        await pg.delete_store(store_id)
    finally:
        await pg.close()
    print("\n| provider | ef_search | recall@10 | p50 ms | filtered 10% | filtered 50% |\n|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--spread", type=float, default=0.08)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef", type=int, nargs="+", default=[40, 64, 100])
    parser.add_argument("--batch", type=int, default=10_000, help="chunks per insert call")
    parser.add_argument("--url", help="a PostgreSQL with pgvector (default: start one from the pgserver wheel)")
    args = parser.parse_args()
    if args.url:
        asyncio.run(bench(args, args.url))
        return
    import pgserver

    folder = Path(tempfile.mkdtemp(prefix="lamina-bench-pg-"))
    folder.chmod(0o755)
    server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        asyncio.run(bench(args, server.get_uri("postgres")))
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
