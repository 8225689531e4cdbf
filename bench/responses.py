"""Responses API overhead, measured against chat completions through the same provider in one run.

    python bench/responses.py [--requests 300] [--chunks 10000] [--no-tools-only] [--baseline TREE]

A scripted upstream (tests/responses/scripted_upstream.py) and `lamina run` each in a process of their own, and
an aiohttp client here. Three figures:

1. a Responses call with no tools vs the same chat completion (same model, same input): p50 added latency, for a
   stored response (the default) and one with `store: false`, the three kinds of call interleaved; and the
   server's own CPU time per call of each kind (user + system of the `lamina run` process, from /proc, over
   batches of one kind, the kinds in turn), which load on the machine moves far less than latency;
2. a file_search turn over a vector store of `--chunks` chunks vs the model calls it makes (two chat
   completions with the same messages): p50 added latency, i.e. the search and the loop's own work;
3. 64 concurrent streamed responses with a function tool: every one must end with `response.completed` and a
   `function_call` item.

`--baseline TREE` (another checkout, e.g. `git worktree add ../base main`, or `git archive main` unpacked) runs a
second `lamina run` with TREE's core and responses plugin first on its path, and measures figure 1 on both
servers, round by round in turn, so that a change and its baseline see the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).parent
UPSTREAM = HERE.parent / "tests" / "responses" / "scripted_upstream.py"
MODEL = "up/gpt-scripted"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(url)


def run_config(upstream: str, data: str, background_workers: int | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "version": 1,
        "storage": {"dir": data},
        "providers": {
            "inference": [{"id": "up", "type": "remote::openai", "config": {"base_url": upstream, "max_retries": 0}}],
            "files": [{"id": "files", "type": "inline::localfs", "config": {}}],
            "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib", "config": {}}],
            "responses": [{"id": "responses", "type": "inline::responses", "config": {}}],
        },
        "apis": {"vector_io": {"default_embedding_model": "up/embed-scripted"}},
    }
    if background_workers is not None:
        config["apis"]["responses"] = {"background_workers": background_workers}
    return config


async def timed(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    began = time.perf_counter()
    async with session.post(url, json=body) as response:
        payload = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {payload[:300]!r}")
    return (time.perf_counter() - began) * 1000


async def paired(
    session: aiohttp.ClientSession, n: int, first: tuple[str, Any], second: tuple[str, Any]
) -> tuple[float, float]:
    """p50 of each of two kinds of call, interleaved so load on the machine hits both alike."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(n):
        a.append(await first[1]() if callable(first[1]) else await timed(session, first[0], first[1]))
        b.append(await second[1]() if callable(second[1]) else await timed(session, second[0], second[1]))
    return statistics.median(a), statistics.median(b)


async def fill_store(session: aiohttp.ClientSession, base: str, chunks: int) -> str:
    async with session.post(f"{base}/vector_stores", json={"name": "bench"}) as response:
        store = (await response.json())["id"]
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    batch = 500
    for start in range(0, chunks, batch):
        items = [
            {"content": f"chunk {i} {words[i % 10]} {words[(i // 10) % 10]} {words[(i // 100) % 10]} tide table"}
            for i in range(start, min(start + batch, chunks))
        ]
        async with session.post(f"{base}/vector-io/insert", json={"vector_store_id": store, "chunks": items}) as r:
            if r.status != 200:
                raise RuntimeError(await r.text())
    return store


async def concurrent_streams(session: aiohttp.ClientSession, base: str, n: int) -> tuple[int, float]:
    async def one(i: int) -> bool:
        body = {"model": MODEL, "input": f"weather {i}", "tools": [WEATHER], "stream": True}
        last: dict[str, Any] = {}
        async with session.post(f"{base}/responses", json=body) as response:
            async for line in response.content:
                if line.startswith(b"data: {"):
                    last = json.loads(line[6:])
        output = last.get("response", {}).get("output") or []
        return last.get("type") == "response.completed" and any(i.get("type") == "function_call" for i in output)

    began = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(results), time.perf_counter() - began


def cpu_seconds(pid: int) -> float:
    """CPU time process `pid` has run so far, all its threads: the scheduler's count in nanoseconds
    (/proc/PID/task/*/schedstat), else user + system from /proc/PID/stat (10 ms ticks)."""
    tasks = list(Path(f"/proc/{pid}/task").glob("*/schedstat"))
    try:
        return sum(int(task.read_text().split()[0]) for task in tasks) / 1e9
    except (OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


KINDS = ("chat", "stored", "unstored")


def no_tools_calls() -> dict[str, tuple[str, dict[str, Any]]]:
    """Figure 1's three kinds of call: path and body."""
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}
    responses = {"model": MODEL, "input": "hello there"}
    return {
        "chat": ("/chat/completions", chat),
        "stored": ("/responses", responses),
        "unstored": ("/responses", {**responses, "store": False}),
    }


async def no_tools(session: aiohttp.ClientSession, servers: dict[str, tuple[str, int]], requests: int) -> None:
    """Figure 1 on each server (name -> (base URL, pid)), round by round in turn."""
    calls = no_tools_calls()
    for base, _ in servers.values():
        for _ in range(20):  # warm up every path
            for path, body in calls.values():
                await timed(session, base + path, body)
    # Chat, stored response, unstored response, one of each in turn: load on the machine hits all three alike.
    ms: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in KINDS} for name in servers}
    for _ in range(requests):
        for name, (base, _) in servers.items():
            for kind, (path, body) in calls.items():
                ms[name][kind].append(await timed(session, base + path, body))
    # CPU: batches of one kind (the clock ticks at 10 ms: a batch must be long), kinds and servers in turn.
    batch, rounds = 50, max(1, requests // 50)
    cpu: dict[str, dict[str, float]] = {name: dict.fromkeys(KINDS, 0.0) for name in servers}
    for _ in range(rounds):
        for name, (base, pid) in servers.items():
            for kind, (path, body) in calls.items():
                began = cpu_seconds(pid)
                for _ in range(batch):
                    await timed(session, base + path, body)
                cpu[name][kind] += cpu_seconds(pid) - began
    for name in servers:
        chat_ms, stored_ms, unstored_ms = (ms[name][kind] for kind in KINDS)
        chat_p50 = statistics.median(chat_ms)
        resp_p50, unstored_p50 = statistics.median(stored_ms), statistics.median(unstored_ms)
        # The median of each turn's difference too: less moved by load that drifts during the run.
        paired_stored = statistics.median(s - c for s, c in zip(stored_ms, chat_ms, strict=True))
        paired_unstored = statistics.median(u - c for u, c in zip(unstored_ms, chat_ms, strict=True))
        us = {kind: cpu[name][kind] / (batch * rounds) * 1e6 for kind in KINDS}
        label = f"[{name}] " if len(servers) > 1 else ""
        print(
            f"{label}no tools: chat p50 {chat_p50:.2f} ms, responses p50 {resp_p50:.2f} ms stored, "
            f"{unstored_p50:.2f} ms with store=false: added {resp_p50 - chat_p50:.2f} ms stored, "
            f"{unstored_p50 - chat_p50:.2f} ms unstored (median of paired differences: {paired_stored:.2f} / "
            f"{paired_unstored:.2f} ms)"
        )
        print(
            f"{label}server CPU per call ({batch * rounds} of each): chat {us['chat']:.0f} µs, responses "
            f"{us['stored']:.0f} µs stored, {us['unstored']:.0f} µs unstored: added {us['stored'] - us['chat']:.0f} "
            f"µs stored, {us['unstored'] - us['chat']:.0f} µs unstored"
        )


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


async def count_instructions(
    session: aiohttp.ClientSession, servers: dict[str, tuple[str, int]], requests: int, home: Path
) -> None:
    """Instructions per call of each kind (valgrind's count, every thread of the server): unlike CPU time, the same
    however loaded the machine is. Instrumentation is on for the measured calls only."""
    calls = no_tools_calls()
    counts: dict[str, dict[str, float]] = {name: {} for name in servers}
    for name, (base, pid) in servers.items():
        for kind, (path, body) in calls.items():
            callgrind(pid, "--instr=on")
            for _ in range(10):  # the instrumented code paths warmed
                await timed(session, base + path, body)
            callgrind(pid, "--zero")
            for _ in range(requests):
                await timed(session, base + path, body)
            before = set((home / name).glob("callgrind.*"))
            callgrind(pid, f"--dump={kind}")
            callgrind(pid, "--instr=off")
            while not (new := set((home / name).glob("callgrind.*")) - before):
                await asyncio.sleep(0.1)
            dump = new.pop()
            totals = [line for line in dump.read_text().splitlines() if line.startswith(("summary:", "totals:"))]
            counts[name][kind] = int(totals[0].split()[1]) / requests
    for name in servers:
        ir = counts[name]
        label = f"[{name}] " if len(servers) > 1 else ""
        print(
            f"{label}server instructions per call ({requests} of each): chat {ir['chat'] / 1e3:,.0f}k, responses "
            f"{ir['stored'] / 1e3:,.0f}k stored, {ir['unstored'] / 1e3:,.0f}k unstored: added "
            f"{(ir['stored'] - ir['chat']) / 1e3:,.0f}k stored, {(ir['unstored'] - ir['chat']) / 1e3:,.0f}k unstored"
        )


async def measure(
    servers: dict[str, tuple[str, int]], requests: int, chunks: int, no_tools_only: bool, instructions: Path | None
) -> None:
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        if instructions is not None:
            await count_instructions(session, servers, requests, instructions)
            return
        await no_tools(session, servers, requests)
        if no_tools_only:
            return
        base = servers["this"][0]
        began = time.perf_counter()
        store = await fill_store(session, base, chunks)
        print(f"filled a vector store with {chunks} chunks in {time.perf_counter() - began:.1f} s")
        question = "charlie delta tide"
        search_body = {
            "model": MODEL,
            "input": question,
            "tools": [{"type": "file_search", "vector_store_ids": [store], "max_num_results": 5}],
            "store": False,
        }
        async with session.post(f"{base}/responses", json={**search_body, "store": True}) as response:
            sample = await response.json()
        tool_call = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "file_search", "arguments": json.dumps({"queries": [question]})},
                }
            ],
        }
        results = sample["output"][0]
        assert results["type"] == "file_search_call", sample
        first_call = {
            "model": MODEL,
            "messages": [{"role": "user", "content": question}],
            "tools": [{"type": "function", "function": {"name": "file_search", "parameters": {"type": "object"}}}],
        }
        second_call = {
            "model": MODEL,
            "messages": [
                {"role": "user", "content": question},
                tool_call,
                {"role": "tool", "tool_call_id": "call_1", "content": "x" * 2000},
            ],
        }

        async def two_chats() -> float:
            return await timed(session, f"{base}/chat/completions", first_call) + await timed(
                session, f"{base}/chat/completions", second_call
            )

        for _ in range(10):
            await two_chats()
            await timed(session, f"{base}/responses", search_body)
        chats_p50, search_p50 = await paired(
            session, requests // 3, ("", two_chats), (f"{base}/responses", search_body)
        )
        print(
            f"file_search over {chunks} chunks: two chat calls p50 {chats_p50:.2f} ms, "
            f"response with file_search p50 {search_p50:.2f} ms: added {search_p50 - chats_p50:.2f} ms"
        )

        done, seconds = await concurrent_streams(session, base, 64)
        print(f"64 concurrent streamed responses with a function tool: {done}/64 completed in {seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="100 requests (as `nox -s bench -- --quick` asks)")
    parser.add_argument("--no-tools-only", action="store_true", help="only the first figure (no tools)")
    parser.add_argument("--baseline", metavar="TREE", help="also measure figure 1 with this tree's core and plugin")
    parser.add_argument(
        "--instructions", action="store_true", help="figure 1 as instructions per call, servers under valgrind"
    )
    args, _ = parser.parse_known_args()  # `nox -s bench -- ...` hands every script the same arguments
    if args.quick:
        args.requests = 100
    import yaml

    trees = {"this": None, **({"base": Path(args.baseline).resolve()} if args.baseline else {})}
    with tempfile.TemporaryDirectory() as data:
        up_port = free_port()
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        upstream = subprocess.Popen([sys.executable, str(UPSTREAM), str(up_port)], **quiet)  # type: ignore[call-overload]
        processes = [upstream]
        servers: dict[str, tuple[str, int]] = {}
        try:
            for name, tree in trees.items():
                home = Path(data) / name
                home.mkdir()
                run_yaml = home / "run.yaml"
                # Under valgrind a second lasts a minute: the background workers' polling, which costs by the second,
                # not by the request, is switched off so that it does not swamp the count.
                workers = 0 if args.instructions else None
                config = run_config(f"http://127.0.0.1:{up_port}/v1", str(home), workers)
                run_yaml.write_text(yaml.safe_dump(config))
                port = free_port()
                command = [sys.executable, "-c", "from lamina.cli import main; main()", "run", str(run_yaml)]
                if args.instructions:
                    out = f"--callgrind-out-file={home / 'callgrind.%p'}"
                    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", out, *command]
                env = {**os.environ, "LAMINA_HOME": str(home)}
                if tree is not None:  # the baseline's core and orchestrator, found before the installed ones
                    env["PYTHONPATH"] = f"{tree / 'plugins' / 'responses'}:{tree / 'core'}"
                lamina = subprocess.Popen([*command, "--port", str(port)], env=env, **quiet)  # type: ignore[call-overload]
                processes.append(lamina)
                servers[name] = (f"http://127.0.0.1:{port}/v1", lamina.pid)
            wait_healthy(f"http://127.0.0.1:{up_port}/v1/models")
            for base, _ in servers.values():
                wait_healthy(f"{base}/health", 900 if args.instructions else 60)
            where = Path(data) if args.instructions else None
            asyncio.run(measure(servers, args.requests, args.chunks, args.no_tools_only, where))
        finally:
            for process in reversed(processes):
                process.send_signal(signal.SIGTERM)
                process.wait(15)


if __name__ == "__main__":
    main()
