"""`python load_generator.py URL MODEL CLIENTS REQUESTS`: CLIENTS concurrent aiohttp clients send REQUESTS chat
completions in all, every other one streamed, checking each answer; prints {"ok", "errors", "elapsed"} as JSON.
A process of its own, run at a lower priority, so generating load does not starve the server it measures."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


async def one_request(session: aiohttp.ClientSession, url: str, model: str, i: int) -> str | None:
    """None when the answer is right, else what was wrong."""
    text = f"load {i}"
    stream = i % 2 == 0
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    async with session.post(url, json=body) as response:
        if response.status != 200:
            return f"#{i}: {response.status} {await response.text()}"
        if not stream:
            answer = await response.json()
            if answer["choices"][0]["message"]["content"] != f"echo: {text}" or answer["usage"]["total_tokens"] != 6:
                return f"#{i}: wrong answer {answer}"
            return None
        pieces, done = [], False
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            if line.strip() == b"data: [DONE]":
                done = True
                continue
            event = json.loads(line[6:])
            if "error" in event:
                return f"#{i}: error event {event}"
            pieces += [choice["delta"].get("content") or "" for choice in event["choices"]]
        if not done or "".join(pieces) != f"echo: {text}":
            return f"#{i}: wrong stream {pieces} (done={done})"
        return None


async def drive(url: str, model: str, clients: int, total: int) -> dict[str, object]:
    numbers = iter(range(total))
    errors: list[str] = []
    ok = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def client() -> None:
            nonlocal ok
            for i in numbers:
                try:
                    problem = await one_request(session, url, model, i)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    problem = f"#{i}: {exc!r}"
                if problem is None:
                    ok += 1
                else:
                    errors.append(problem)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return {"ok": ok, "errors": errors[:20], "error_count": len(errors), "elapsed": time.perf_counter() - started}


def main() -> None:
    url, model, clients, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    try:
        import uvloop  # optional: a cheaper client leaves more of the machine to the server under test

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        print(json.dumps(runner.run(drive(url, model, clients, total))))


if __name__ == "__main__":
    main()
