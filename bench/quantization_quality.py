"""How far a quantized inline::torch decoder's next-token distributions are from the float32 model's.

    LAMINA_TEST_SMOLLM2=path/to/SmolLM2-135M-Instruct.Q4_1.gguf python bench/quantization_quality.py
        [--quantize int4] [--tokens 400] [--text ARCHITECTURE.md]

Teacher-forced on a text: the float32 decoder (`quantize: none`) prefills the whole text once; the quantized one
prefills its first 20 tokens and then decodes the rest one token at a time, so every position goes through the
decode path (the compiled kernels where they build; LAMINA_TORCH_KERNELS=0 for ATen's). Prints the share of
positions whose most likely next token agrees, and the mean and largest KL divergence from the float32
distribution.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from lamina_inference_torch.model import Decoder, prepare_tensors
from lamina_inference_torch.tokenizer import load_tokenizer
from lamina_inference_torch.weights import load_model

DEFAULT_GGUF = os.environ.get("LAMINA_TEST_SMOLLM2", "/work/models-dev/SmolLM2-135M-Instruct.Q4_1.gguf")
PREFILLED = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=Path(DEFAULT_GGUF))
    parser.add_argument("--quantize", default="int4", choices=["int8", "int4"])
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--text", type=Path, default=Path(__file__).parent.parent / "ARCHITECTURE.md")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.gguf)
    ids = load_tokenizer(args.gguf, loaded.gguf_metadata).encode(args.text.read_text())[: args.tokens]
    exact = Decoder(loaded.config, prepare_tensors(loaded.config, load_model(args.gguf).weights, quantize="none"))
    reference = exact.prefill(0, ids, all_logits=True)[PREFILLED:]
    tensors = prepare_tensors(loaded.config, loaded.weights, quantize=args.quantize, fp16_above_rows=4)
    quantized = Decoder(loaded.config, tensors, fp16_above_rows=4)
    quantized.prefill(0, ids[:PREFILLED])
    steps = [
        quantized.decode(torch.tensor([ids[position]]), torch.tensor([position]))
        for position in range(PREFILLED, len(ids))
    ]
    logits = torch.cat(steps)
    agreement = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    kl = torch.nn.functional.kl_div(
        logits.log_softmax(-1), reference.log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    print(
        f"{args.gguf.name}, quantize={args.quantize}, {len(steps)} decoded positions of {args.text.name}: "
        f"top-1 agreement {agreement:.1%}, KL mean {kl.mean():.4f}, max {kl.max():.3f}"
    )


if __name__ == "__main__":
    main()
