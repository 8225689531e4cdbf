"""The gateway with `lamina run --workers 2` against one worker, in one run: requests/s and CPU µs per request.

    python bench/workers.py [--seconds 5] [--concurrency 16 64] [--postgres postgresql://...]

Both runs serve the same run config: one remote::openai provider in front of bench/fake_upstream.py, storage in
a scratch database on the PostgreSQL at `--postgres` (several workers need shared storage; the database is
dropped at the end). CPU is every Lamina process's user + system time (the supervisor and its workers) over the
measured window, divided by the requests served; the load generator runs on the same machine, so requests/s
shows how much the second worker helps when the cores are shared with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import tempfile
from pathlib import Path

import yaml
from gateway import BODY, cpu_seconds, free_port, load, start, stop, wait_healthy

HERE = Path(__file__).parent


def family(pid: int) -> list[int]:
    """`pid` and its children (the workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(child) for child in children.read_text().split())] if children.exists() else [pid]


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            total += cpu_seconds(pid)
    return total


async def admin(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    database = f"lamina_bench_{secrets.token_hex(4)}"
    asyncio.run(admin(args.postgres, f'CREATE DATABASE "{database}"'))
    url = args.postgres.rsplit("/", 1)[0] + f"/{database}"
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    up = start([sys.executable, str(HERE / "fake_upstream.py"), str(up_port)])
    folder = Path(tempfile.mkdtemp())
    run_yaml = folder / "run.yaml"
    run_yaml.write_text(
        yaml.safe_dump(
            {
                "storage": {"dir": str(folder / "data"), "type": "postgres", "config": {"url": url}},
                "providers": {
                    "inference": [{"id": "openai", "type": "remote::openai", "config": {"base_url": upstream}}]
                },
            }
        )
    )
    BODY["model"] = "openai/bench"
    results: dict[tuple[int, int], tuple[float, float]] = {}
    try:
        wait_healthy(upstream + "/models")
        print(f"{'workers':>8}{'conc':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'n':>8}{'CPU us/req':>12}")
        for workers in (1, 2):
            port = free_port()
            gateway = start(
                [
                    sys.executable,
                    "-c",
                    "from lamina.cli import main; main()",
                    "run",
                    str(run_yaml),
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                ]
            )
            try:
                wait_healthy(f"http://127.0.0.1:{port}/v1/health", timeout=120)
                target = f"http://127.0.0.1:{port}/v1/chat/completions"
                for concurrency in args.concurrency:
                    asyncio.run(load(target, concurrency, False, 1.0))  # warm connections (and every worker)
                    pids = family(gateway.pid)
                    before = tree_cpu(pids)
                    r = asyncio.run(load(target, concurrency, False, args.seconds))
                    cpu = (tree_cpu(pids) - before) * 1e6 / r["n"]
                    results[(workers, concurrency)] = (r["rps"], cpu)
                    print(
                        f"{workers:>8}{concurrency:>6}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['n']:>8}"
                        f"{cpu:>12.0f}" + (f"  FAILURES {r['failures']}" if r["failures"] else "")
                    )
            finally:
                stop(gateway)
        print("\n2 workers against 1")
        for concurrency in args.concurrency:
            (rps1, cpu1), (rps2, cpu2) = results[(1, concurrency)], results[(2, concurrency)]
            print(f"  c={concurrency:<3} requests/s x{rps2 / rps1:.2f}   CPU us/request x{cpu2 / cpu1:.2f}")
    finally:
        stop(up)
        asyncio.run(admin(args.postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
