"""Vector-store ingestion into the postgres distro's stores against the SQLite/hnswlib ones, in one run.

    python bench/ingestion_postgres.py [--files 120] [--url postgresql://...]

The same corpus (seeded generated text, `--files` files of ~12 KB) and the same embedding provider (a
remote::openai in front of bench/fake_upstream.py --varied: a distinct vector per chunk, answered in
microseconds, so the stores are what is measured) through two `lamina run` servers, one after the other:

- sqlite: core's SQLite storage, inline::localfs files, inline::hnswlib vectors (the starter's stores);
- postgres: the postgres distro's stores: storage, file bytes (remote::postgres) and remote::pgvector, all in a
  PostgreSQL 16 with pgvector started from the `pgserver` wheel (or `--url`, a scratch database on yours).

For each: the files are uploaded, then attached in one file batch; ingestion is timed from the batch's creation
to its completion (polled every 50 ms), as files/s and chunks/s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from gateway import free_port, start, stop, wait_healthy
from openai import OpenAI

HERE = Path(__file__).parent
WORDS = [
    f"{stem}{suffix}"
    for stem in ("heron", "reed", "river", "stone", "moss", "ash", "wren", "tide")
    for suffix in ("", "s", "ed", "ing", "er")
]


def corpus(files: int) -> list[bytes]:
    draw = random.Random(11)
    texts = []
    for _ in range(files):
        sentences = [" ".join(draw.choices(WORDS, k=draw.randint(6, 16))).capitalize() + "." for _ in range(180)]
        texts.append(" ".join(sentences).encode())
    return texts


def ingest(run_yaml: Path, texts: list[bytes]) -> dict[str, float]:
    port = free_port()
    server = start(
        [sys.executable, "-c", "from lamina.cli import main; main()", "run", str(run_yaml), "--port", str(port)]
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/v1/health", timeout=120)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
        ids = [client.files.create(file=(f"doc{i}.txt", text), purpose="assistants").id for i, text in enumerate(texts)]
        store = client.vector_stores.create(name="bench")
        began = time.perf_counter()
        batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids)
        while batch.status == "in_progress":
            time.sleep(0.05)
            batch = client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
        elapsed = time.perf_counter() - began
        assert batch.status == "completed" and batch.file_counts.completed == len(ids), batch
        chunks = (
            sum(len(client.vector_stores.files.content(file_id, vector_store_id=store.id).data) for file_id in ids[:5])
            * len(ids)
            / 5
        )  # every file has about as many chunks: the first five tell
        return {"seconds": elapsed, "files_per_s": len(ids) / elapsed, "chunks_per_s": chunks / elapsed}
    finally:
        stop(server)


async def admin(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def with_database(url: str, database: str) -> str:
    head, _, tail = url.partition("://")
    authority, _, rest = tail.partition("/")
    query = rest.partition("?")[2]
    return f"{head}://{authority}/{database}" + (f"?{query}" if query else "")


def configs(folder: Path, upstream: str, url: str) -> dict[str, dict[str, Any]]:
    inference = {
        "id": "openai",
        "type": "remote::openai",
        "config": {"base_url": upstream, "models": ["bench-embed"], "embedding_models": ["bench-embed"]},
    }
    apis = {"vector_io": {"default_embedding_model": "openai/bench-embed"}}
    return {
        "sqlite": {
            "storage": {"dir": str(folder / "sqlite")},
            "providers": {
                "inference": [inference],
                "files": [{"id": "files", "type": "inline::localfs"}],
                "vector_io": [{"id": "vectors", "type": "inline::hnswlib"}],
            },
            "apis": apis,
        },
        "postgres": {
            "storage": {"dir": str(folder / "postgres"), "type": "postgres", "config": {"url": url}},
            "providers": {
                "inference": [inference],
                "files": [{"id": "files", "type": "remote::postgres"}],
                "vector_io": [{"id": "vectors", "type": "remote::pgvector"}],
            },
            "apis": apis,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=120)
    parser.add_argument("--url", help="a PostgreSQL with pgvector (default: start one from the pgserver wheel)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="lamina-bench-ingest-"))
    folder.chmod(0o755)  # pgserver runs PostgreSQL as a user of its own, which must enter it
    server = None
    if args.url:
        admin_url = args.url
    else:
        import pgserver

        server = pgserver.get_server(folder / "pg", cleanup_mode="delete")
        admin_url = server.get_uri("postgres")
    database = f"lamina_bench_{secrets.token_hex(4)}"
    asyncio.run(admin(admin_url, f'CREATE DATABASE "{database}"'))
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    up = start([sys.executable, str(HERE / "fake_upstream.py"), str(up_port), "--varied"])
    texts = corpus(args.files)
    try:
        wait_healthy(upstream + "/models")
        results = {}
        for name, config in configs(folder, upstream, with_database(admin_url, database)).items():
            run_yaml = folder / f"{name}.yaml"
            run_yaml.write_text(yaml.safe_dump(config))
            results[name] = r = ingest(run_yaml, texts)
            print(
                f"{name:<9} {r['seconds']:7.2f} s  {r['files_per_s']:7.1f} files/s  {r['chunks_per_s']:8.0f} chunks/s"
            )
        ratio = results["postgres"]["chunks_per_s"] / results["sqlite"]["chunks_per_s"]
        print(
            f"\npostgres distro's ingestion rate: {ratio:.0%} of SQLite/hnswlib's ({len(texts)} files, "
            f"{sum(map(len, texts)) / 1e6:.1f} MB)"
        )
    finally:
        stop(up)
        asyncio.run(admin(admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        if server is not None:
            server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
