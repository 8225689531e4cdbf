"""Safety speed: inline::rules throughput, and what an input guardrail adds to a chat completion.

    python bench/safety.py [--texts 5000] [--requests 300]

1. rules throughput: 1 KB texts (ordinary prose and code, one in ten carrying PII or a secret, made from the
   labelled set in plugins/safety-rules/tests/) scanned on one core, by the scanner itself and through the
   provider's run_shield. Target: >= 5,000 texts/s. Reported per CPU-second of this process (what one core
   does, even on a busy machine) and per wall-second (lower when other processes share the cores).
2. guardrail latency: non-streamed chat completions over HTTP against a fake OpenAI-compatible upstream on
   127.0.0.1 (remote::openai in front of it), to a model with an input guardrail (the `rules` shield, all
   categories) and to the same model without, alternating one request each, in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

LABELLED = Path(__file__).resolve().parents[1] / "plugins/safety-rules/tests/labelled.jsonl"


def make_texts(count: int, size: int = 1024) -> list[str]:
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines()]
    clean = [r["text"] for r in rows if not r["categories"]]
    flagged = [r["text"] for r in rows if r["categories"]]
    rng = random.Random(7)
    texts = []
    for i in range(count):
        parts: list[str] = [rng.choice(flagged)] if i % 10 == 0 else []
        while sum(len(p) + 1 for p in parts) < size:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(clean))
        texts.append("\n".join(parts)[:size])
    return texts


def rates(texts: list[str], run: Any, rounds: int = 3) -> tuple[float, float]:
    """Texts per second, best of `rounds`: by this process's CPU time (the figure for one core, which other
    processes on a shared machine do not inflate) and by the wall clock."""
    best_cpu = best_wall = 0.0
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        run(texts)
        best_cpu = max(best_cpu, len(texts) / (time.process_time() - cpu))
        best_wall = max(best_wall, len(texts) / (time.perf_counter() - wall))
    return best_cpu, best_wall


def bench_rules(count: int) -> float:
    from lamina.apis.inference.types import ChatMessage
    from lamina.apis.safety.types import Shield
    from lamina_safety_rules import RulesConfig
    from lamina_safety_rules.provider import RulesProvider

    texts = make_texts(count)
    provider = RulesProvider(RulesConfig(), "rules")
    scanner = provider.scanner
    flagged = sum(1 for text in texts if scanner.scan(text))
    scan_cpu, scan_wall = rates(texts, lambda batch: [scanner.scan(text) for text in batch])
    shield = Shield(id="rules", provider_id="rules", provider_shield_id="rules")

    async def judge(batch: list[str]) -> None:
        for text in batch:
            await provider.run_shield(shield, [ChatMessage(role="user", content=text)], {})

    loop = asyncio.new_event_loop()
    shield_cpu, shield_wall = rates(texts, lambda batch: loop.run_until_complete(judge(batch)))
    loop.close()
    print(f"rules: {len(texts)} texts of 1 KB, {flagged} flagged ({flagged / len(texts):.0%}), one core, best of 3")
    print(f"  scanner.scan         {scan_cpu:8,.0f} texts per CPU-second ({1e6 / scan_cpu:5.1f} us)   target >= 5,000")
    print(f"                       {scan_wall:8,.0f} texts per wall-second")
    print(f"  provider.run_shield  {shield_cpu:8,.0f} texts per CPU-second ({1e6 / shield_cpu:5.1f} us)")
    print(f"                       {shield_wall:8,.0f} texts per wall-second")
    best_scan = scan_cpu
    return best_scan


def start_fake_upstream() -> str:
    from aiohttp import web
    from lamina.testing import serve_app

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "chat"}]})

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Sure, here you go."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    served = serve_app(app).__enter__()  # lives as long as the bench process
    return f"http://127.0.0.1:{served.port}/v1"


def bench_guardrail(count: int) -> None:
    import requests
    from lamina.testing import serve

    upstream = start_fake_upstream()
    config: dict[str, Any] = {
        "providers": {
            "inference": [{"id": "up", "type": "remote::openai", "config": {"base_url": upstream, "models": ["chat"]}}],
            "safety": [{"id": "rules", "type": "inline::rules"}],
        },
        "apis": {
            "inference": {"models": [{"id": "guarded", "provider_id": "up", "provider_model_id": "chat"}]},
            "safety": {
                "shields": [{"id": "rules", "provider_id": "rules"}],
                "guardrails": [{"shield": "rules", "apply_to": "input", "models": ["guarded"]}],
            },
        },
    }
    question = make_texts(2, 600)[1]  # a 600-character user message without findings (every tenth text has one)
    question = "Please summarise the following notes for the team meeting. " + question.replace("@", " at ")
    with serve(config) as base_url, requests.Session() as session:

        def once(model: str) -> float:
            body = {"model": model, "messages": [{"role": "user", "content": question}]}
            started = time.perf_counter()
            response = session.post(f"{base_url}/chat/completions", json=body, timeout=30)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            return elapsed

        probe = session.post(
            f"{base_url}/safety/run-shield",
            json={"shield_id": "rules", "messages": [{"role": "user", "content": question}]},
        ).json()
        assert probe["violation"] is None, probe
        for _ in range(30):  # warm up both paths
            once("up/chat"), once("guarded")
        plain, guarded = [], []
        for _ in range(count):
            plain.append(once("up/chat"))
            guarded.append(once("guarded"))

    def describe(samples: list[float]) -> str:
        ordered = sorted(samples)
        return (
            f"mean {statistics.mean(samples) * 1e3:6.2f} ms  p50 {ordered[len(ordered) // 2] * 1e3:6.2f} ms  "
            f"p95 {ordered[int(len(ordered) * 0.95)] * 1e3:6.2f} ms"
        )

    added = statistics.median(guarded) - statistics.median(plain)
    print(f"guardrail latency: {count} non-streamed chat completions each, {len(question)}-character input")
    print(f"  without guardrail  {describe(plain)}")
    print(f"  with rules input   {describe(guarded)}")
    print(
        f"  added (p50)        {added * 1e3:6.2f} ms  ratio {statistics.median(guarded) / statistics.median(plain):.3f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    bench_rules(args.texts)
    bench_guardrail(args.requests)


if __name__ == "__main__":
    main()
