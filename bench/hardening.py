"""Does a big body or a burst of uploads stall other requests? (issue 12)

`python bench/hardening.py`: `lamina run starter` in its own process (no upstream needed); a prober asks
`GET /v1/health` every 20 ms and records each latency, first on an idle server (the baseline), then while
  - 4 clients send 15 MB chat bodies (under the 16 MiB limit, so each is read and parsed) in a loop,
  - 4 clients announce 100 MB bodies (refused by Content-Length before a byte is read),
  - 50 clients upload 4 MB files at once, twice.
Printed: health p50 / p99 / max per phase, each as a ratio to the idle baseline, and the server's peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp

PROBE_EVERY = 0.02


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def probe_process(base: str, stop: multiprocessing.synchronize.Event, out: multiprocessing.Queue[list[float]]) -> None:
    """In a process of its own, so the load this bench generates never delays the probes themselves."""

    async def run() -> list[float]:
        latencies = []
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                started = time.perf_counter()
                async with session.get(f"{base}/health") as response:
                    await response.read()
                latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(PROBE_EVERY)
        return latencies

    out.put(asyncio.run(run()))


async def during(base: str, load: Coroutine[Any, Any, None] | None) -> list[float]:
    stop = multiprocessing.Event()
    out: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
    prober = multiprocessing.Process(target=probe_process, args=(base, stop, out))
    prober.start()
    if load is None:
        await asyncio.sleep(3)
    else:
        await load
    stop.set()
    latencies = await asyncio.to_thread(out.get)
    prober.join()
    return latencies


async def big_bodies(base: str, rounds: int) -> None:
    content = "x" * (15 * 1024 * 1024)
    body = json.dumps({"model": "nope", "messages": [{"role": "user", "content": content}]}).encode()

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(rounds):
                async with session.post(
                    f"{base}/chat/completions", data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    assert response.status == 404, response.status  # parsed, then: no such model
                    await response.read()

    await asyncio.gather(*(client() for _ in range(4)))


async def announced_100mb(base: str, rounds: int) -> None:
    host, port = base.removeprefix("http://").removesuffix("/v1").split(":")

    async def client() -> None:
        for _ in range(rounds):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 104857600\r\n\r\n"
            )
            status = (await reader.readline()).split()[1]
            assert status == b"413", status
            writer.close()

    await asyncio.gather(*(client() for _ in range(4)))


async def uploads(base: str, rounds: int) -> None:
    data = os.urandom(4 * 1024 * 1024)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:

        async def one() -> None:
            form = aiohttp.FormData()
            form.add_field("purpose", "assistants")
            form.add_field("file", data, filename="blob.bin", content_type="application/octet-stream")
            async with session.post(f"{base}/files", data=form) as response:
                assert response.status == 200, await response.text()

        for _ in range(rounds):
            await asyncio.gather(*(one() for _ in range(50)))


def summary(name: str, latencies: list[float], baseline: list[float] | None) -> str:
    ordered = sorted(latencies)
    p50, p99, worst = statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))], ordered[-1]
    line = f"| {name} | {len(ordered)} | {p50:.2f} | {p99:.2f} | {worst:.1f} |"
    if baseline:
        base = sorted(baseline)
        line += f" {p50 / statistics.median(base):.1f}x / {worst / base[-1]:.1f}x |"
    else:
        line += " 1x |"
    return line


async def main() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "LAMINA_HOME": home}
        for name in ("OPENAI_BASE_URL", "VLLM_URL", "OLLAMA_URL", "LLAMACPP_URL", "EMBEDDING_MODEL"):
            env.pop(name, None)
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "lamina"), "run", "starter", "--port", str(port)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(300):
                    try:
                        async with session.get(f"{base}/health") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
                rss_idle = peak_rss_mb(server.pid)
                idle = await during(base, None)
                rows = [summary("idle (baseline)", idle, None)]
                rows.append(summary("4 × 15 MB chat bodies, 3 rounds", await during(base, big_bodies(base, 3)), idle))
                rss_bodies = peak_rss_mb(server.pid)
                rows.append(
                    summary("4 × 100 MB announced, 25 rounds", await during(base, announced_100mb(base, 25)), idle)
                )
                rows.append(summary("50 × 4 MB uploads, 2 rounds", await during(base, uploads(base, 2)), idle))
            print("| phase | probes | health p50 ms | p99 ms | max ms | p50 / max vs idle |")
            print("|---|---|---|---|---|---|")
            print("\n".join(rows))
            print(f"\npeak RSS: {rss_idle:.0f} MB idle, {rss_bodies:.0f} MB after the 15 MB bodies, "
                  f"{peak_rss_mb(server.pid):.0f} MB at the end")  # fmt: skip
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    asyncio.run(main())
