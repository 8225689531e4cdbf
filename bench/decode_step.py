"""The inline::torch decode step in-process, on SmolLM2-135M's real weights, against a baseline `model.py`.

    python bench/decode_step.py --baseline OTHER/plugins/inference-torch/lamina_inference_torch/model.py
        [--gguf PATH] [--quantize int4] [--fp16-above-rows auto] [--threads 1] [--rows 1,8] [--rounds 6] [--steps 8]

Both decoders are built from the same converted tensors (this checkout's `prepare_tensors`) and fed the same
prompts; rounds alternate between them (old, new, then new, old...), so both see the same machine state. Prints
the largest logit difference between the two and, per batch size, the median CPU time (process time: other work
on the machine inflates it far less than wall time) and wall time of a step, with the ratio new / old. Without
`--baseline`, only this checkout's step is timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from lamina_inference_torch import model as current
from lamina_inference_torch.weights import load_model

DEFAULT_GGUF = os.environ.get("LAMINA_TEST_SMOLLM2", "/work/models-dev/SmolLM2-135M-Instruct.Q4_1.gguf")


def load_baseline(path: Path):
    spec = importlib.util.spec_from_file_location("baseline_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_model"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=Path(DEFAULT_GGUF))
    parser.add_argument("--baseline", type=Path, help="another checkout's lamina_inference_torch/model.py")
    parser.add_argument("--quantize", default="int4", choices=["none", "int8", "int4"])
    parser.add_argument("--fp16-above-rows", type=lambda v: v if v == "auto" else int(v), default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", default="1,8")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.gguf)
    tensors = current.prepare_tensors(
        loaded.config, loaded.weights, quantize=args.quantize, fp16_above_rows=args.fp16_above_rows
    )
    modules = {"new": current}
    if args.baseline:
        modules["old"] = load_baseline(args.baseline)
    decoders = {}
    for name, module in modules.items():
        # Packing frees the float16 copies: each decoder packs its own.
        own = {key: value.clone() if key.endswith(".fp16") else value for key, value in tensors.items()}
        decoders[name] = module.Decoder(
            loaded.config, own, max_batch=8, context_length=1024, fp16_above_rows=args.fp16_above_rows
        )
        decoders[name].pack()
    order = sorted(decoders, reverse=True)  # old first when there is one
    for rows in map(int, args.rows.split(",")):
        for decoder in decoders.values():
            for slot in range(rows):
                decoder.prefill(slot, list(range(1, 40 + slot)))
        positions = torch.tensor([39 + slot for slot in range(rows)])
        tokens = torch.tensor([5 + slot for slot in range(rows)])
        logits = {name: decoder.decode(tokens, positions) for name, decoder in decoders.items()}
        if "old" in logits:
            difference = (logits["old"] - logits["new"]).abs().max().item()
            same = bool((logits["old"].argmax(-1) == logits["new"].argmax(-1)).all())
            print(f"rows={rows}: max |logit difference| {difference:.2e}, same argmax: {same}")
        cpu: dict[str, list[float]] = {name: [] for name in decoders}
        wall: dict[str, list[float]] = {name: [] for name in decoders}
        for round_ in range(args.rounds):
            for name in order if round_ % 2 == 0 else order[::-1]:
                for step in range(args.steps):
                    started, started_cpu = time.perf_counter(), time.process_time()
                    decoders[name].decode(tokens, positions + 1 + step)
                    wall[name].append(time.perf_counter() - started)
                    cpu[name].append(time.process_time() - started_cpu)
        line = [f"rows={rows} threads={args.threads}"]
        for name in order:
            c, w = statistics.median(cpu[name]) * 1e3, statistics.median(wall[name]) * 1e3
            line.append(f"{name}: cpu {c:.2f} ms, wall {w:.2f} ms ({rows / w * 1e3:.1f} tok/s)")
        if "old" in cpu:
            ratio = statistics.median(cpu["new"]) / statistics.median(cpu["old"])
            line.append(
                f"new/old cpu {ratio:.3f}, wall {statistics.median(wall['new']) / statistics.median(wall['old']):.3f}"
            )
        print("; ".join(line), flush=True)


if __name__ == "__main__":
    main()
