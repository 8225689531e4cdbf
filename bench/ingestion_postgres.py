"""Vector-store ingestion into the postgres distro's stores against the SQLite/hnswlib ones, in one run.

    python bench/ingestion_postgres.py [--files 120] [--url postgresql://...]

The same corpus (seeded generated text, `--files` files of ~14 KB) and the same embedding provider (a
remote::openai in front of bench/fake_upstream.py --varied: a distinct vector per chunk, answered in
microseconds, so the stores are what is measured) through two `lamina run` servers, one after the other:

- sqlite: core's SQLite storage, inline::localfs files, inline::hnswlib vectors (the starter's stores);
- postgres: the postgres distro's stores: storage, file bytes (remote::postgres) and remote::pgvector, all in a
  PostgreSQL 16 with pgvector started from the `pgserver` wheel (or `--url`, a scratch database on yours).

Both servers run at once; each uploads the files, then in alternating rounds attaches them to a new vector store
in one file batch, timed from the batch's creation to its completion (polled every 50 ms): files/s, chunks/s,
and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from gateway import cpu_seconds, free_port, start, stop, wait_healthy
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


def upload(client: OpenAI, texts: list[bytes]) -> list[str]:
    return [client.files.create(file=(f"doc{i}.txt", text), purpose="assistants").id for i, text in enumerate(texts)]


def ingest(client: OpenAI, ids: list[str]) -> dict[str, float]:
    """One round: a new vector store, the files attached in one batch, timed until it completes."""
    store = client.vector_stores.create(name="bench")
    began = time.perf_counter()
    batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids)
    while batch.status == "in_progress":
        time.sleep(0.05)
        batch = client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
    elapsed = time.perf_counter() - began
    assert batch.status == "completed" and batch.file_counts.completed == len(ids), batch
    # Every file has about as many chunks: the first five tell.
    sample = [len(client.vector_stores.files.content(i, vector_store_id=store.id).data) for i in ids[:5]]
    return {"seconds": elapsed, "files_per_s": len(ids) / elapsed, "chunks_per_s": sum(sample) * len(ids) / 5 / elapsed}


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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", help="a PostgreSQL with pgvector (default: start one from the pgserver wheel)")
    parser.add_argument(
        "--synchronous-commit",
        default="on",
        help="the scratch database's synchronous_commit: `off` matches SQLite's synchronous=NORMAL (no flush per "
        "commit), to see how much of the difference the flushes are",
    )
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
    commit = "off" if args.synchronous_commit == "off" else "on"
    asyncio.run(admin(admin_url, f'ALTER DATABASE "{database}" SET synchronous_commit = {commit}'))
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    up = start([sys.executable, str(HERE / "fake_upstream.py"), str(up_port), "--varied"])
    texts = corpus(args.files)
    servers: dict[str, Any] = {}
    try:
        wait_healthy(upstream + "/models")
        clients, ids = {}, {}
        for name, config in configs(folder, upstream, with_database(admin_url, database)).items():
            run_yaml = folder / f"{name}.yaml"
            run_yaml.write_text(yaml.safe_dump(config))
            port = free_port()
            command = [sys.executable, "-c", "from lamina.cli import main; main()", "run", str(run_yaml), "--port"]
            servers[name] = start([*command, str(port)])
            wait_healthy(f"http://127.0.0.1:{port}/v1/health", timeout=120)
            clients[name] = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
            ids[name] = upload(clients[name], texts)
        # Alternating rounds, each into a new vector store, so a change in the machine's load hits both.
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in clients}
        for _ in range(args.rounds):
            for name, client in clients.items():
                cpu_before = cpu_seconds(servers[name].pid)
                rounds[name].append(r := ingest(client, ids[name]))
                busy = (cpu_seconds(servers[name].pid) - cpu_before) / r["seconds"]
                print(
                    f"{name:<9} {r['seconds']:7.2f} s {r['files_per_s']:7.1f} files/s {r['chunks_per_s']:8.0f} chunks/s"
                    f"  Lamina busy {busy:4.0%} of a core"
                )
        rate = {name: statistics.median(r["chunks_per_s"] for r in results) for name, results in rounds.items()}
        print(
            f"\nmedian of {args.rounds} rounds: sqlite {rate['sqlite']:.0f}, postgres {rate['postgres']:.0f} chunks/s; "
            f"postgres distro's ingestion rate (synchronous_commit {commit}): {rate['postgres'] / rate['sqlite']:.0%} of "
            f"SQLite/hnswlib's ({len(texts)} files, {sum(map(len, texts)) / 1e6:.1f} MB)"
        )
    finally:
        for process in servers.values():
            stop(process)
        stop(up)
        asyncio.run(admin(admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        if server is not None:
            server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
