"""Gateway overhead: the same load sent straight to a fast fake upstream and through Lamina, in one run.

    python bench/gateway.py [--seconds 5] [--quick]

Prints p50/p99 latency, time to first byte, requests/s for concurrency 1, 16 and 64, streaming and not, the
overhead Lamina adds, and the cold start of `lamina run starter` (command to first healthy answer).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).parent
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello in a few words."}], "max_tokens": 16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 30) -> float:
    import urllib.request

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(url)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used: robust to other load on the machine, unlike wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ["BENCH_LOG"], "ab") if "BENCH_LOG" in os.environ else subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


async def load(url: str, concurrency: int, stream: bool, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    first_bytes: list[float] = []
    failures = 0
    body = {**BODY, "stream": stream}
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                async with session.post(url, json=body) as response:
                    if stream:
                        first = None
                        async for _ in response.content.iter_any():
                            if first is None:
                                first = time.perf_counter()
                        first_bytes.append((first or time.perf_counter()) - began)
                    else:
                        await response.read()
                        first_bytes.append(time.perf_counter() - began)
                    if response.status != 200:
                        failures += 1
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "ttfb": statistics.median(first_bytes) * 1000,
        "n": len(latencies),
        "failures": failures,
    }


def cold_start(upstream: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        port = free_port()
        with tempfile.TemporaryDirectory() as home:
            process = start(
                [sys.executable, "-c", "from lamina.cli import main; main()", "run", "starter", "--port", str(port)],
                {"OPENAI_BASE_URL": upstream, "LAMINA_HOME": home},
            )
            try:
                times.append(wait_healthy(f"http://127.0.0.1:{port}/v1/health"))
            finally:
                stop(process)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 16, 64])
    args = parser.parse_args()

    up_port, lamina_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    up = start([sys.executable, str(HERE / "fake_upstream.py"), str(up_port)])
    wait_healthy(upstream + "/models")
    home = tempfile.mkdtemp()
    gateway = start(
        [sys.executable, "-c", "from lamina.cli import main; main()", "run", "starter", "--port", str(lamina_port)],
        {"OPENAI_BASE_URL": upstream, "LAMINA_HOME": home},
    )
    try:
        wait_healthy(f"http://127.0.0.1:{lamina_port}/v1/health")
        targets = {
            "direct": (upstream + "/chat/completions", "bench"),
            "lamina": (f"http://127.0.0.1:{lamina_port}/v1/chat/completions", "openai/bench"),
        }
        print(
            f"{'mode':<8}{'stream':<8}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ttfb ms':>9}{'n':>8}"
            f"{'lamina CPU us/req':>19}"
        )
        results = {}
        for stream in (False, True):
            for concurrency in args.concurrency:
                for name, (url, model) in targets.items():
                    BODY["model"] = model
                    asyncio.run(load(url, concurrency, stream, 1.0))  # warm connections and caches
                    cpu_before = cpu_seconds(gateway.pid)
                    r = asyncio.run(load(url, concurrency, stream, args.seconds))
                    cpu_used = (cpu_seconds(gateway.pid) - cpu_before) * 1e6 / r["n"] if name == "lamina" else 0
                    results[(name, stream, concurrency)] = r
                    print(
                        f"{name:<8}{stream!s:<8}{concurrency:>5}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
                        f"{r['ttfb']:>9.2f}{r['n']:>8}{f'{cpu_used:.0f}' if cpu_used else '':>19}"
                        + (f"  FAILURES {r['failures']}" if r["failures"] else "")
                    )
        print("\nLamina's overhead (through vs direct)")
        for stream in (False, True):
            for concurrency in args.concurrency:
                d, g = results[("direct", stream, concurrency)], results[("lamina", stream, concurrency)]
                print(
                    f"  stream={stream!s:<5} c={concurrency:<3} added p50 {g['p50'] - d['p50']:6.2f} ms"
                    f"  added ttfb {g['ttfb'] - d['ttfb']:6.2f} ms  throughput {g['rps'] / d['rps']:6.1%} of direct"
                )
        print(f"\ncold start (lamina run starter -> first healthy answer), median of 3: {cold_start(upstream):.2f} s")
    finally:
        stop(gateway)
        stop(up)


if __name__ == "__main__":
    main()
