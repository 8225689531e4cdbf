"""Sampled decoding speed against greedy on SmolLM2-135M, in one run, at 1 and 8 streams.

    python bench/sampling.py [--gguf PATH] [--quantize auto] [--threads 2] [--tokens 96] [--repeats 9]

One engine (default settings: `quantize: auto`, int4 for SmolLM2's Q4_1 file; 2 threads). For each batch size, alternately runs greedy and
sampled (temperature 0.7, top_p 0.9, frequency 0.3 / presence 0.2 / repetition 1.1 penalties) decoding of
`--tokens` tokens per stream, end-of-turn tokens biased away so every stream decodes its full budget. Rate =
tokens after each stream's first / time from the first stream's first token to the last token; best of
`--repeats` (9: on a VM one repeat's rate swings ~10% from the next). Prints sampled / greedy (target >= 90%).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

DEFAULT_GGUF = os.environ.get("LAMINA_TEST_SMOLLM2", "/work/models-dev/SmolLM2-135M-Instruct.Q4_1.gguf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", default=DEFAULT_GGUF)
    parser.add_argument("--quantize", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    path = Path(args.gguf)
    if not path.exists():
        sys.exit(f"no model at {path}: pass --gguf or set LAMINA_TEST_SMOLLM2")

    from lamina_inference_torch.config import TorchConfig
    from lamina_inference_torch.engine import Finished, Sequence, TextDelta
    from lamina_inference_torch.provider import load_served_model
    from lamina_inference_torch.sampling import SamplingParams

    config = TorchConfig(models=[str(path)], quantize=args.quantize, threads=args.threads, max_batch=8)
    served = load_served_model(path, config, None)
    engine, tokenizer = served.engine, served.tokenizer
    no_stop = {token: -100.0 for token in tokenizer.stop_token_ids}
    prompt = tokenizer.encode(
        tokenizer.render_chat([{"role": "user", "content": "Write a long story about a lighthouse keeper."}], None)
    )
    kinds = {
        "greedy": dict(temperature=0.0),
        "sampled": dict(
            temperature=0.7, top_p=0.9, frequency_penalty=0.3, presence_penalty=0.2, repetition_penalty=1.1
        ),
    }

    def rate(streams: int, kind: str) -> float:
        first: list[float] = []
        done = threading.Event()
        finished = [0]

        def emit(event: object) -> None:
            if isinstance(event, TextDelta) and not first:
                first.append(time.perf_counter())
            if isinstance(event, Finished):
                finished[0] += 1
                if finished[0] == streams:
                    done.set()

        for index in range(streams):
            params = SamplingParams(**kinds[kind], logit_bias=no_stop, seed=index)
            engine.submit(Sequence(prompt, params, args.tokens, [], emit))
        done.wait()
        return streams * (args.tokens - 1) / (time.perf_counter() - first[0])

    rate(1, "greedy")
    for streams in (1, 8):
        best = {kind: 0.0 for kind in kinds}
        for _ in range(args.repeats):
            for kind in kinds:
                best[kind] = max(best[kind], rate(streams, kind))
        print(
            f"{streams} stream(s): greedy {best['greedy']:.1f} tok/s, sampled {best['sampled']:.1f} tok/s, "
            f"sampled / greedy {best['sampled'] / best['greedy']:.1%} (target >= 90%)"
        )
    engine.close()


if __name__ == "__main__":
    main()
