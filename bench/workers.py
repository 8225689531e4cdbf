"""The gateway with `lamina run --workers 2` against one worker, in one run: requests/s and CPU µs per request.

    python bench/workers.py [--seconds 4] [--rounds 3] [--concurrency 16 64] [--postgres postgresql://...]

Both servers run the same run config, as bench/gateway.py's: one remote::openai provider in front of
bench/fake_upstream.py, SQLite storage (or a scratch database on the PostgreSQL at `--postgres`, dropped at the
end). Both are up at once and measured in alternating rounds (medians reported). CPU is every Lamina process's user + system time (the supervisor and its workers) over the
measured window, divided by the requests served; the load generator runs on the same machine, so requests/s
shows how much the second worker helps when the cores are shared with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
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
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--postgres", help="keep the storage in a scratch database there (default: SQLite files)")
    args = parser.parse_args()

    database = f"lamina_bench_{secrets.token_hex(4)}"
    storage: dict[str, object] = {}
    if args.postgres:
        asyncio.run(admin(args.postgres, f'CREATE DATABASE "{database}"'))
        storage = {"type": "postgres", "config": {"url": args.postgres.rsplit("/", 1)[0] + f"/{database}"}}
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    up = start([sys.executable, str(HERE / "fake_upstream.py"), str(up_port)])
    folder = Path(tempfile.mkdtemp())
    BODY["model"] = "openai/bench"
    servers: dict[int, tuple[object, int]] = {}
    samples: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    try:
        wait_healthy(upstream + "/models")
        # Both servers up at once, measured in alternating rounds, so a change in the machine's load hits both.
        for workers in (1, 2):
            run_yaml = folder / f"run{workers}.yaml"
            provider = {"id": "openai", "type": "remote::openai", "config": {"base_url": upstream}}
            config = {
                "storage": {"dir": str(folder / f"data{workers}"), **storage},
                "providers": {"inference": [provider]},
            }
            run_yaml.write_text(yaml.safe_dump(config))
            port = free_port()
            command = ["run", str(run_yaml), "--port", str(port), "--workers", str(workers)]
            servers[workers] = (start([sys.executable, "-c", "from lamina.cli import main; main()", *command]), port)
        for _, port in servers.values():
            wait_healthy(f"http://127.0.0.1:{port}/v1/health", timeout=120)
        for _ in range(args.rounds):
            for concurrency in args.concurrency:
                for workers, (process, port) in servers.items():
                    target = f"http://127.0.0.1:{port}/v1/chat/completions"
                    asyncio.run(load(target, concurrency, False, 1.0))  # warm connections (and every worker)
                    pids = family(process.pid)  # type: ignore[attr-defined]
                    before = tree_cpu(pids)
                    r = asyncio.run(load(target, concurrency, False, args.seconds))
                    cpu = (tree_cpu(pids) - before) * 1e6 / r["n"]
                    samples.setdefault((workers, concurrency), []).append((r["rps"], cpu, r["p50"]))
                    if r["failures"]:
                        print(f"workers={workers} c={concurrency}: {r['failures']} FAILURES")
        print(
            f"{'workers':>8}{'conc':>6}{'req/s':>10}{'p50 ms':>9}{'CPU us/req':>12}   (medians of {args.rounds} rounds)"
        )
        medians = {}
        for (workers, concurrency), rows in sorted(samples.items()):
            rps, cpu, p50 = (statistics.median(column) for column in zip(*rows, strict=True))
            medians[(workers, concurrency)] = (rps, cpu)
            print(f"{workers:>8}{concurrency:>6}{rps:>10.0f}{p50:>9.2f}{cpu:>12.0f}")
        print("\n2 workers against 1")
        for concurrency in args.concurrency:
            (rps1, cpu1), (rps2, cpu2) = medians[(1, concurrency)], medians[(2, concurrency)]
            print(f"  c={concurrency:<3} requests/s x{rps2 / rps1:.2f}   CPU us/request x{cpu2 / cpu1:.2f}")
    finally:
        for process, _ in servers.values():
            stop(process)  # type: ignore[arg-type]
        stop(up)
        if args.postgres:
            asyncio.run(admin(args.postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
