"""Batch throughput: a 10,000-line embeddings batch against the same requests sent concurrently by a client.

    python bench/batches.py [--lines 10000] [--concurrency 16] [--rounds 2]

Both go through one `lamina run` in front of the fast fake upstream (bench/fake_upstream.py), in one run. While
the batch runs, `/v1/health` and a chat completion are timed against the same probes on the idle server, to show
that interactive traffic keeps its latency.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from gateway import cpu_seconds, free_port, start, stop, wait_healthy

HERE = Path(__file__).parent
EMBEDDING = {"model": "fake/bench-embed", "input": "a sentence to embed for the batch benchmark"}
CHAT = {"model": "fake/bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


async def client_rate(url: str, lines: int, concurrency: int) -> tuple[float, dict[str, list[float]]]:
    """Requests/s of `lines` embeddings requests sent by `concurrency` client workers, and the probes' latencies
    meanwhile."""
    remaining = iter(range(lines))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session, aiohttp.ClientSession() as probing:
        stop_event = asyncio.Event()
        probes = asyncio.create_task(probe(probing, url, stop_event))

        async def worker() -> None:
            for _ in remaining:
                async with session.post(f"{url}/embeddings", json=EMBEDDING) as response:
                    assert response.status == 200, await response.text()
                    await response.read()

        start_time = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rate = lines / (time.perf_counter() - start_time)
        stop_event.set()
        return rate, await probes


async def probe(session: aiohttp.ClientSession, url: str, stop_event: asyncio.Event) -> dict[str, list[float]]:
    """Latencies of /health and a chat completion, every 50 ms until `stop_event`."""
    times: dict[str, list[float]] = {"health": [], "chat": []}
    while not stop_event.is_set():
        start_time = time.perf_counter()
        async with session.get(f"{url}/health") as response:
            await response.read()
        times["health"].append(time.perf_counter() - start_time)
        start_time = time.perf_counter()
        async with session.post(f"{url}/chat/completions", json=CHAT) as response:
            assert response.status == 200, await response.text()
            await response.read()
        times["chat"].append(time.perf_counter() - start_time)
        await asyncio.sleep(0.05)
    return times


async def batch_rate(url: str, lines: int) -> tuple[float, dict[str, list[float]]]:
    body = b"".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings", "body": EMBEDDING}).encode()
        + b"\n"
        for i in range(lines)
    )
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", io.BytesIO(body), filename="batch.jsonl")
        async with session.post(f"{url}/files", data=form) as response:
            file_id = (await response.json())["id"]
        stop_event = asyncio.Event()
        probes = asyncio.create_task(probe(session, url, stop_event))
        start_time = time.perf_counter()
        request = {"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}
        async with session.post(f"{url}/batches", json=request) as response:
            batch = await response.json()
        while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
            await asyncio.sleep(0.05)
            async with session.get(f"{url}/batches/{batch['id']}") as response:
                batch = await response.json()
        elapsed = time.perf_counter() - start_time
        stop_event.set()
        latencies = await probes
        assert batch["status"] == "completed", batch
        assert batch["request_counts"]["completed"] == lines, batch["request_counts"]
        return lines / elapsed, latencies


async def idle_latencies(url: str, seconds: float = 3) -> dict[str, list[float]]:
    async with aiohttp.ClientSession() as session:
        stop_event = asyncio.Event()
        task = asyncio.create_task(probe(session, url, stop_event))
        await asyncio.sleep(seconds)
        stop_event.set()
        return await task


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 2 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16, help="client workers; the batch's default too")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    up_port, port = free_port(), free_port()
    upstream = start([sys.executable, str(HERE / "fake_upstream.py"), str(up_port)])
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "providers": {
                "inference": [
                    {"id": "fake", "type": "remote::openai", "config": {"base_url": f"http://127.0.0.1:{up_port}/v1"}}
                ],
                "files": [{"id": "files", "type": "inline::localfs", "config": {}}],
            },
            "apis": {"batches": {"max_in_flight_per_batch": args.concurrency}},
            "storage": {"dir": tmp},
        }
        run_yaml = Path(tmp) / "run.yaml"
        run_yaml.write_text(yaml.safe_dump(config))
        server = start(["lamina", "run", str(run_yaml), "--port", str(port)])
        url = f"http://127.0.0.1:{port}/v1"
        try:
            wait_healthy(f"{url}/health")
            wait_healthy(f"{url}/models")
            asyncio.run(client_rate(url, 200, args.concurrency))  # warm-up
            idle = asyncio.run(idle_latencies(url))
            # Alternating rounds, so load from elsewhere on the machine falls on both alike; CPU time per request
            # of the server process is the figure other load moves least.
            rates: dict[str, list[float]] = {"client": [], "batch": []}
            cpu: dict[str, list[float]] = {"client": [], "batch": []}
            for _ in range(args.rounds):
                before = cpu_seconds(server.pid)
                direct, loaded = asyncio.run(client_rate(url, args.lines, args.concurrency))
                cpu["client"].append((cpu_seconds(server.pid) - before) / args.lines * 1e6)
                rates["client"].append(direct)
                before = cpu_seconds(server.pid)
                batched, busy = asyncio.run(batch_rate(url, args.lines))
                cpu["batch"].append((cpu_seconds(server.pid) - before) / args.lines * 1e6)
                rates["batch"].append(batched)
        finally:
            stop(server)
            stop(upstream)
    print(f"{args.lines} embeddings requests, {args.concurrency} at a time, {args.rounds} alternating rounds")
    for mode in ("client", "batch"):
        print(
            f"  {mode:7} req/s {', '.join(f'{r:.0f}' for r in rates[mode]):24}"
            f" server CPU µs/request {', '.join(f'{c:.0f}' for c in cpu[mode])}"
        )
    ratio = statistics.median(b / c for b, c in zip(rates["batch"], rates["client"], strict=True))
    cpu_ratio = statistics.median(c / b for b, c in zip(cpu["batch"], cpu["client"], strict=True))
    print(f"  batch / client: rate {ratio:.2f} (target >= 0.80), by server CPU per request {cpu_ratio:.2f}")
    for name in ("health", "chat"):
        print(f"  {name} latency, p50 / p99 ms:")
        for label, times in (("idle", idle), ("during the client's load", loaded), ("during the batch", busy)):
            print(f"    {label:26} {p(times[name], 50):6.1f} / {p(times[name], 99):6.1f}")


if __name__ == "__main__":
    main()
