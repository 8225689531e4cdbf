"""Decode speed with a JSON-schema constraint against the same requests unconstrained, on SmolLM2-135M, in one run.

    python bench/grammar.py [--gguf PATH] [--quantize auto] [--threads 2] [--tokens 96] [--repeats 3]

One engine (default settings: int8 + float16 copy, 2 threads). For 1 and 8 streams, alternately decodes the same
prompt free and constrained by a schema (an array of at least 40 objects with a patterned string, an integer, an
enum and a free string: structure all the way, not one long string), greedy, `--tokens` tokens per stream,
end-of-turn tokens biased away so both kinds decode the full budget. Rate = tokens after each stream's first / time
from the first stream's first token to the last token; best of `--repeats`. Prints constrained / free (target: at
most 15% slower, i.e. >= 85%), plus the grammar's compile time and its mask cost per token measured alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

DEFAULT_GGUF = os.environ.get("LAMINA_TEST_SMOLLM2", "/work/models-dev/SmolLM2-135M-Instruct.Q4_1.gguf")
ITEM = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
        "quantity": {"type": "integer", "minimum": 1},
        "status": {"enum": ["pending", "shipped", "delivered", "returned"]},
        "note": {"type": "string", "maxLength": 40},
    },
    "required": ["sku", "quantity", "status", "note"],
    "additionalProperties": False,
}
SCHEMA = {
    "type": "object",
    "properties": {"orders": {"type": "array", "items": ITEM, "minItems": 40}},
    "required": ["orders"],
    "additionalProperties": False,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", default=DEFAULT_GGUF)
    parser.add_argument("--quantize", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = Path(args.gguf)
    if not path.exists():
        sys.exit(f"no model at {path}: pass --gguf or set LAMINA_TEST_SMOLLM2")

    from lamina_inference_torch.config import TorchConfig
    from lamina_inference_torch.engine import Finished, Sequence, TextDelta
    from lamina_inference_torch.grammar import Grammars, allowed_tokens, build_constraint
    from lamina_inference_torch.provider import load_served_model
    from lamina_inference_torch.sampling import SamplingParams

    config = TorchConfig(models=[str(path)], quantize=args.quantize, threads=args.threads, max_batch=8)
    served = load_served_model(path, config, None)
    engine, tokenizer = served.engine, served.tokenizer
    grammars = Grammars(tokenizer, engine.decoder.vocab_size)
    no_stop = {token: -100.0 for token in tokenizer.stop_token_ids}
    prompt = tokenizer.encode(
        tokenizer.render_chat([{"role": "user", "content": "List the orders of our shop as JSON."}], None)
    )
    response_format = {"type": "json_schema", "json_schema": {"name": "orders", "schema": SCHEMA, "strict": True}}
    constraint = build_constraint(response_format, [], None, "json")

    started = time.perf_counter()
    grammars.tokenizer()
    tokenizer_seconds = time.perf_counter() - started
    started = time.perf_counter()
    grammars.matchers(constraint, 1)
    compile_seconds = time.perf_counter() - started
    started = time.perf_counter()
    grammars.matchers(constraint, 8)
    copies_seconds = time.perf_counter() - started

    def rate(streams: int, constrained: bool) -> tuple[float, list[int]]:
        first: list[float] = []
        done = threading.Event()
        finished = [0]
        sequences = []

        def emit(event: object) -> None:
            if isinstance(event, TextDelta) and not first:
                first.append(time.perf_counter())
            if isinstance(event, Finished):
                finished[0] += 1
                if finished[0] == streams:
                    done.set()

        matchers = grammars.matchers(constraint, streams) if constrained else [None] * streams
        for matcher in matchers:
            sequence = Sequence(prompt, SamplingParams(temperature=0.0, logit_bias=no_stop), args.tokens, [], emit)
            sequence.matcher = matcher
            sequences.append(sequence)
            engine.submit(sequence)
        done.wait()
        elapsed = time.perf_counter() - first[0]
        return sum(len(s.generated) - 1 for s in sequences) / elapsed, sequences[0].generated

    rate(1, False)
    sample: list[int] = []
    results = {}
    for streams in (1, 8):
        best = {False: 0.0, True: 0.0}
        for _ in range(args.repeats):
            for constrained in (False, True):
                measured, generated = rate(streams, constrained)
                best[constrained] = max(best[constrained], measured)
                if constrained:
                    sample = generated
        results[streams] = best
        print(
            f"{streams} stream(s): free {best[False]:.1f} tok/s, json_schema {best[True]:.1f} tok/s, "
            f"constrained / free {best[True] / best[False]:.1%} (target >= 85%)"
        )
    engine.close()

    # The mask alone, replaying the constrained answer's tokens through a fresh matcher.
    (matcher,) = grammars.matchers(constraint, 1)
    costs = []
    for token in sample:
        began = time.perf_counter()
        allowed_tokens(matcher, engine.decoder.vocab_size)
        costs.append(time.perf_counter() - began)
        matcher.consume_token(token)
    print(
        f"llguidance tokenizer {tokenizer_seconds * 1e3:.0f} ms (once per model); schema compile "
        f"{compile_seconds * 1e3:.1f} ms, 8 copies of the compiled grammar {copies_seconds * 1e3:.2f} ms; mask per "
        f"token median {statistics.median(costs) * 1e6:.0f} us, max {max(costs) * 1e6:.0f} us over {len(costs)} tokens"
    )
    print("sample:", tokenizer.decode(sample)[:160])


if __name__ == "__main__":
    main()
