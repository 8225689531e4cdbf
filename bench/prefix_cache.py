"""Time to first token with the prefix cache, against the same engine computing the prefix, on SmolLM2-135M.

    python bench/prefix_cache.py [--gguf PATH] [--quantize auto] [--threads 2] [--rounds 5]

Each round makes a new ~1,000-token prefix (a system prompt of numbered facts no earlier round used) and times
two requests on one engine (max_tokens 1, so the time is prefill plus the first token): the first with that
prefix and a question, uncached (it also pays for storing the prefix's blocks), then the same prefix with
another question, which reuses the cached blocks and prefills only the tail. Prints the medians, their ratio
(target <= 20%), and the cache's memory per cached token.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

DEFAULT_GGUF = os.environ.get("LAMINA_TEST_SMOLLM2", "/work/models-dev/SmolLM2-135M-Instruct.Q4_1.gguf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", default=DEFAULT_GGUF)
    parser.add_argument("--quantize", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    path = Path(args.gguf)
    if not path.exists():
        sys.exit(f"no model at {path}: pass --gguf or set LAMINA_TEST_SMOLLM2")

    from lamina_inference_torch.config import TorchConfig
    from lamina_inference_torch.engine import Finished, Sequence
    from lamina_inference_torch.provider import load_served_model
    from lamina_inference_torch.sampling import SamplingParams

    config = TorchConfig(
        models=[str(path)], quantize=args.quantize, threads=args.threads, context_length=2048, max_batch=4
    )
    served = load_served_model(path, config, None)
    engine, tokenizer = served.engine, served.tokenizer

    def prompt(round_: int, question: str) -> list[int]:
        facts = " ".join(
            f"Fact {round_}.{i}: the {i}th lighthouse of coast {round_} is painted red." for i in range(60)
        )
        messages = [{"role": "system", "content": facts}, {"role": "user", "content": question}]
        return tokenizer.encode(tokenizer.render_chat(messages, None))

    def time_to_first_token(ids: list[int]) -> tuple[float, int]:
        finished = []
        sequence = Sequence(ids, SamplingParams(temperature=0), 1, [], lambda e: finished.append(e))
        started = time.perf_counter()
        engine.submit(sequence)
        while not any(isinstance(e, Finished) for e in finished):
            time.sleep(0.0005)
        return time.perf_counter() - started, sequence.cached_tokens

    time_to_first_token(prompt(-1, "Warm-up?"))
    uncached, cached, prefix_tokens = [], [], []
    for round_ in range(args.rounds):
        first = prompt(round_, "Which lighthouse is the tallest?")
        second = prompt(round_, "What colour are the lighthouses?")
        shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
        seconds, hit = time_to_first_token(first)
        assert hit == 0
        uncached.append(seconds)
        seconds, hit = time_to_first_token(second)
        cached.append(seconds)
        prefix_tokens.append(hit)
        print(
            f"round {round_}: prompt {len(first)} / {len(second)} tokens, shared {shared}, reused {hit}: "
            f"uncached {uncached[-1] * 1000:.0f} ms, cached {cached[-1] * 1000:.0f} ms"
        )
    cache = engine.prefix_cache
    engine.close()
    u, c = statistics.median(uncached), statistics.median(cached)
    per_token = cache.used / (len(cache) * cache.block)
    print(f"time to first token, median of {args.rounds}: uncached {u * 1000:.0f} ms, cached {c * 1000:.0f} ms")
    print(f"cached / uncached: {c / u:.1%} (target <= 20%)")
    print(
        f"prefix cache memory: {per_token / 1024:.1f} KiB per cached token ({config.dtype} KV, "
        f"{len(cache)} blocks of {cache.block} tokens, {cache.used / 1e6:.0f} MB)"
    )


if __name__ == "__main__":
    main()
