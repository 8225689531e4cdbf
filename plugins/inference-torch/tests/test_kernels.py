"""The compiled decode kernels (`block_linear.cpp`) against plain torch on the same weights, and the decoder with
them against the decoder without them (LAMINA_TORCH_KERNELS=0: ATen's kernels)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from lamina_inference_torch import kernels  # noqa: E402
from lamina_inference_torch.model import Decoder  # noqa: E402
from lamina_inference_torch.weights import load_model  # noqa: E402

# Where the kernel is meant to build, failing to build it is a failure, not a reason to skip.
BUILDS_HERE = platform.machine().lower() in ("x86_64", "amd64") and torch.backends.cpu.get_cpu_capability() in (
    "AVX2",
    "AVX512",
)
needs_kernels = pytest.mark.skipif(not BUILDS_HERE, reason="the compiled kernels are for x86-64 with AVX2")


def dequantize(blocks: torch.Tensor, in_features: int) -> torch.Tensor:
    """The float32 weights [out, in] that q4_1 or q8_0 blocks hold (the layouts `block_linear.cpp` documents)."""
    out_features, n = blocks.shape[0], in_features // 32
    scale = blocks[:, : 2 * n].contiguous().view(torch.float16).float()[..., None]
    if blocks.shape[1] == n * kernels.Q8_0_BYTES:
        levels = blocks[:, 2 * n :].contiguous().view(torch.int8).reshape(out_features, n, 32).float()
        return (levels * scale).reshape(out_features, in_features)
    offset = blocks[:, 2 * n : 4 * n].contiguous().view(torch.float16).float()[..., None]
    packed = blocks[:, 4 * n :].reshape(out_features, n, 16)
    levels = torch.cat([packed & 15, packed >> 4], -1).float()
    return (levels * scale + offset).reshape(out_features, in_features)


@needs_kernels
def test_the_kernel_builds_where_it_should():
    assert kernels.available()


@needs_kernels
@pytest.mark.parametrize("to_blocks", [kernels.q4_1_blocks, kernels.q8_0_blocks], ids=["q4_1", "q8_0"])
@pytest.mark.parametrize("rows", [1, 3, 8, 17])  # 17: two full passes of 8 rows and one of 1
@pytest.mark.parametrize("out_features", [80, 37])  # 37: the last group of features is 5 wide
def test_block_linear_computes_the_matmul_of_the_weights_it_holds(to_blocks, rows, out_features):
    assert kernels.available()
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(out_features, 352, generator=generator)  # 11 blocks of 32 inputs
    blocks = to_blocks(weight)
    interleaved = kernels.interleave(blocks, 352)
    assert interleaved.shape == blocks.shape
    x = torch.randn(rows, 352, generator=generator) * 3
    got = torch.ops.lamina_torch.block_linear(x, interleaved)
    expected = x @ dequantize(blocks, 352).T
    # Activations are rounded to int8 per 32 inputs (as llama.cpp does): ~0.5% off, never more than 2%.
    assert got.shape == (rows, out_features)
    assert ((got - expected).norm() / expected.norm()).item() < 0.02
    # Far closer to the matmul of the blocks' own weights than to anything else: the wrong nibble order or a dropped
    # offset would be tens of percent off.
    assert ((got - x @ weight.T).norm() / (x @ weight.T).norm()).item() > ((got - expected).norm() / expected.norm())


def test_q4_1_blocks_hold_4_bit_weights_exactly():
    """A GGUF Q4_1 tensor, dequantized and converted again, gives back the very same weights."""
    weight = torch.randn(16, 64)
    once = dequantize(kernels.q4_1_blocks(weight), 64)
    assert torch.equal(dequantize(kernels.q4_1_blocks(once), 64), once)
    assert (once - weight).abs().max() <= (weight.amax() - weight.amin()) / 15


@needs_kernels
def test_block_linear_refuses_mismatched_blocks():
    assert kernels.available()
    blocks = kernels.q4_1_blocks(torch.randn(8, 64))
    with pytest.raises(RuntimeError, match="bytes per weight row"):
        torch.ops.lamina_torch.block_linear(torch.randn(1, 96), blocks)
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.lamina_torch.block_linear(torch.randn(1, 64).bfloat16(), blocks)


def _decoder(tiny, quantize: str) -> Decoder:
    loaded = load_model(tiny.gguf_file)
    return Decoder.from_weights(loaded.config, loaded.weights, quantize=quantize, max_batch=3, context_length=64)


def _decode_three_rows(decoder: Decoder) -> torch.Tensor:
    """Rows at unequal positions, as continuous batching has them: what masks or per-row positions must get right."""
    prompts = [list(range(5, 5 + n)) for n in (9, 3, 14)]
    for slot, prompt in enumerate(prompts):
        decoder.prefill(slot, prompt[:-1])
    steps = []
    tokens = torch.tensor([p[-1] for p in prompts])
    positions = torch.tensor([len(p) - 1 for p in prompts])
    for _ in range(4):
        logits = decoder.decode(tokens, positions)
        steps.append(logits)
        tokens, positions = logits.argmax(-1), positions + 1
    return torch.stack(steps)


@needs_kernels
@pytest.mark.parametrize("quantize", ["none", "int4"])
def test_decoding_with_and_without_the_kernels_agrees(tiny, monkeypatch, quantize):
    with_kernels = _decode_three_rows(_decoder(tiny, quantize))
    monkeypatch.setenv("LAMINA_TORCH_KERNELS", "0")
    without = _decode_three_rows(_decoder(tiny, quantize))
    assert torch.equal(with_kernels.argmax(-1), without.argmax(-1))
    # Float32 weights: only the attention differs (summation order). int4: int8 against bfloat16 activations, and a
    # float16 KV cache.
    tolerance = 1e-4 if quantize == "none" else 0.05
    assert (with_kernels - without).abs().max() < tolerance * without.abs().max()


@needs_kernels
def test_auto_threshold_keeps_int4_batches_on_the_kernel_and_others_on_the_copy(tiny, monkeypatch):
    """fp16_above_rows 'auto' (the provider's default): the compiled block kernel beats the float16 copy up to 16
    rows, ATen's int8/int4 kernels up to 4."""

    def threshold(quantize: str) -> int | None:
        loaded = load_model(tiny.gguf_file)
        decoder = Decoder.from_weights(
            loaded.config, loaded.weights, quantize=quantize, max_batch=3, context_length=64, fp16_above_rows="auto"
        )
        return decoder.fp16_above_rows

    assert threshold("int4") == 16
    assert threshold("int8") == 4
    monkeypatch.setenv("LAMINA_TORCH_KERNELS", "0")
    assert threshold("int4") == 4


def test_without_a_compiler_the_engine_says_so_and_falls_back(tmp_path):
    """A machine without a C++ compiler: one warning that names what to install, and ATen's kernels."""
    script = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "from lamina_inference_torch import kernels\n"
        "print('available', kernels.available())\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "CXX": str(tmp_path / "no-such-compiler")}
    env.pop("LAMINA_TORCH_KERNELS", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "available False" in result.stdout
    if BUILDS_HERE:
        assert "could not build the decode kernels" in result.stderr and "C++ compiler" in result.stderr
    assert "Traceback" not in result.stderr
