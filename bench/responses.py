"""Responses API overhead, measured against chat completions through the same provider in one run.

    python bench/responses.py [--requests 300] [--chunks 10000]

A scripted upstream (tests/responses/scripted_upstream.py) and `lamina run` each in a process of their own, and
an aiohttp client here. Three figures:

1. a Responses call with no tools vs the same chat completion (same model, same input): p50 added latency, for a
   stored response (the default) and one with `store: false`, the three kinds of call interleaved;
2. a file_search turn over a vector store of `--chunks` chunks vs the model calls it makes (two chat
   completions with the same messages): p50 added latency, i.e. the search and the loop's own work;
3. 64 concurrent streamed responses with a function tool: every one must end with `response.completed` and a
   `function_call` item.
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


def run_config(upstream: str, data: str) -> dict[str, Any]:
    return {
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


async def measure(base: str, requests: int, chunks: int, no_tools_only: bool = False) -> None:
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}
        responses = {"model": MODEL, "input": "hello there"}
        for _ in range(20):  # warm up both paths
            await timed(session, f"{base}/chat/completions", chat)
            await timed(session, f"{base}/responses", responses)
        # Chat, stored response, unstored response, one of each in turn: load on the machine hits all three alike.
        chat_ms: list[float] = []
        stored_ms: list[float] = []
        unstored_ms: list[float] = []
        for _ in range(requests):
            chat_ms.append(await timed(session, f"{base}/chat/completions", chat))
            stored_ms.append(await timed(session, f"{base}/responses", responses))
            unstored_ms.append(await timed(session, f"{base}/responses", {**responses, "store": False}))
        chat_p50 = statistics.median(chat_ms)
        resp_p50, unstored_p50 = statistics.median(stored_ms), statistics.median(unstored_ms)
        # The median of each turn's difference too: less moved by load that drifts during the run.
        paired_stored = statistics.median(s - c for s, c in zip(stored_ms, chat_ms, strict=True))
        paired_unstored = statistics.median(u - c for u, c in zip(unstored_ms, chat_ms, strict=True))
        print(
            f"no tools: chat p50 {chat_p50:.2f} ms, responses p50 {resp_p50:.2f} ms stored, {unstored_p50:.2f} ms "
            f"with store=false: added {resp_p50 - chat_p50:.2f} ms stored, {unstored_p50 - chat_p50:.2f} ms unstored "
            f"(median of paired differences: {paired_stored:.2f} / {paired_unstored:.2f} ms)"
        )

        if no_tools_only:
            return
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
    args, _ = parser.parse_known_args()  # `nox -s bench -- ...` hands every script the same arguments
    if args.quick:
        args.requests = 100
    up_port, port = free_port(), free_port()
    import yaml

    with tempfile.TemporaryDirectory() as data:
        run_yaml = Path(data) / "run.yaml"
        run_yaml.write_text(yaml.safe_dump(run_config(f"http://127.0.0.1:{up_port}/v1", data)))
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        upstream = subprocess.Popen([sys.executable, str(UPSTREAM), str(up_port)], **quiet)  # type: ignore[call-overload]
        command = [
            sys.executable,
            "-c",
            "from lamina.cli import main; main()",
            "run",
            str(run_yaml),
            "--port",
            str(port),
        ]
        lamina = subprocess.Popen(command, env={**os.environ, "LAMINA_HOME": data}, **quiet)  # type: ignore[call-overload]
        try:
            wait_healthy(f"http://127.0.0.1:{up_port}/v1/models")
            wait_healthy(f"http://127.0.0.1:{port}/v1/health")
            asyncio.run(measure(f"http://127.0.0.1:{port}/v1", args.requests, args.chunks, args.no_tools_only))
        finally:
            for process in (lamina, upstream):
                process.send_signal(signal.SIGTERM)
                process.wait(15)


if __name__ == "__main__":
    main()
