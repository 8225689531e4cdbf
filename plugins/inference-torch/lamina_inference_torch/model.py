"""A Llama-family decoder written for serving: fused projections, a slot KV cache, few ops per layer.

The KV cache holds up to `max_batch` slots of up to `context_length` positions per layer, allocated as they are
used (`_reserve`). `prefill` runs one sequence's prompt (or a chunk of it) into one slot; `decode` advances slots
0..B-1 by one token each in one batched forward, every row at its own position.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lamina_inference_torch import kernels
from lamina_inference_torch.weights import ModelConfig

# Above this many rows a matmul is compute-bound: quantized weights are expanded (or their float16 copy used)
# rather than using the weight-only kernel, which is built for skinny (decode) activations.
_INT8_KERNEL_MAX_ROWS = 16
# fp16_above_rows 'auto' for ATen's int8/int4 kernels, measured on 2 cores (SmolLM2-135M): their step time grows
# ~linearly past 4 rows (8 rows: 35-39 ms) while fbgemm's fp16 GEMM stays nearly flat (1 row: ~26 ms, 8 rows:
# ~30 ms); at 4 rows they are even. The compiled block kernel beats the copy up to _INT8_KERNEL_MAX_ROWS rows.
_ATEN_KERNEL_MAX_ROWS = 4
# Rows of a weight matrix quantized at a time.
_CONVERT_ROWS = 4096
# ATen's `_weight_int8pack_mm` has a vectorized CPU kernel for AVX-512 only; on AVX2 a float16 GEMV beats it.
_HEAD_PREFERS_FP16 = torch.backends.cpu.get_cpu_capability() == "AVX2"
# The KV cache grows in whole multiples of this many positions (doubling), so growing is rare.
KV_BLOCK = 256


class DenseLinear:
    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.weight = tensors["weight"]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Int8Linear:
    """Weight-only int8, symmetric per output channel; activations go through bfloat16 for the CPU kernel.

    With a float16 copy, also keeps the weights packed for fbgemm's fp16 GEMM, which reads each weight
    once for all rows: the int8 kernel's cost grows about linearly past 4 rows, so bigger decode batches
    (and prefill) are faster on the float16 copy, and closer to float32 as well.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
        self.qweight, self.scale = tensors["qweight"], tensors["scale"]
        self.dtype = dtype
        self.in_features = self.qweight.shape[1]
        self.fp16 = tensors.get("fp16")  # packed on first use (`pack`): packing costs seconds on a small CPU
        self.packed_fp16: torch.ScriptObject | None = None
        # Batches of more rows than this take the float16 copy (the decoder lowers it for the LM head).
        self.fp16_above_rows = _INT8_KERNEL_MAX_ROWS

    def pack(self) -> None:
        if self.fp16 is not None:
            self.packed_fp16 = torch.ops.quantized.linear_prepack_fp16(self.fp16.float(), None)
            self.fp16 = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.packed_fp16 is not None and rows.shape[0] > self.fp16_above_rows:
            out = torch.ops.quantized.linear_dynamic_fp16(rows.float(), self.packed_fp16).to(self.dtype)
        elif rows.shape[0] > _INT8_KERNEL_MAX_ROWS:
            out = F.linear(rows, self.qweight.to(self.dtype) * self.scale.to(self.dtype)[:, None])
        else:
            out = torch.ops.aten._weight_int8pack_mm(rows.to(torch.bfloat16), self.qweight, self.scale).to(self.dtype)
        return out.view(*x.shape[:-1], -1)


class BlockLinear(Int8Linear):
    """Weights in 32-weight blocks as GGUF stores them: q4_1 (`int4`: a scale and an offset per block, which holds a
    Q4_0/Q4_1 file's weights exactly, up to float16 rounding of the two) or q8_0 (the LM head under int4). Decode
    batches run on the compiled kernel (`kernels`), which reads each block once per batch; prefill and batches above
    the row threshold on the float16 copy (fbgemm). Where the kernel could not be built, q4_1 runs on ATen's int4
    kernel (`scale` then holds its per-group scales and zeros) and q8_0 on the float16 copy at every batch size."""

    def __init__(self, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.fp16 = tensors["fp16"]
        self.packed_fp16 = None
        self.in_features = self.fp16.shape[1]
        self.fp16_above_rows = _INT8_KERNEL_MAX_ROWS
        self.qweight, self.scale = tensors["blocks"], None
        if kernels.available():
            self.qweight = kernels.interleave(self.qweight, self.in_features)
        elif self.qweight.shape[1] == self.in_features // 32 * kernels.Q4_1_BYTES:
            self.qweight, self.scale = _int4pack(self.qweight, self.in_features)
        else:
            self.fp16_above_rows = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] > self.fp16_above_rows:
            out = torch.ops.quantized.linear_dynamic_fp16(rows.float(), self.packed_fp16)
        elif self.scale is None:
            out = torch.ops.lamina_torch.block_linear(rows.float(), self.qweight)
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows.to(torch.bfloat16), self.qweight, 32, self.scale)
        return out.to(self.dtype).view(*x.shape[:-1], -1)


def _int4pack(blocks: torch.Tensor, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q4_1 blocks -> ATen's int4 kernel's packed levels and [in / 32, out, (scale, zero)] (it computes
    (level - 8) * scale + zero per group)."""
    out_features, n = blocks.shape[0], in_features // 32
    scale = blocks[:, : 2 * n].contiguous().view(torch.float16).float()
    offset = blocks[:, 2 * n : 4 * n].contiguous().view(torch.float16).float()
    packed = blocks[:, 4 * n :].reshape(out_features, n, 16)
    levels = torch.cat([packed & 15, packed >> 4], -1).reshape(out_features, in_features).to(torch.int32)
    qweight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(levels, 1)
    return qweight, torch.stack([scale, offset + 8 * scale], -1).transpose(0, 1).contiguous().to(torch.bfloat16)


Linear = DenseLinear | Int8Linear | BlockLinear


def linear_tensors(weight: torch.Tensor, dtype: torch.dtype, quantize: str, fp16_copy: bool) -> dict[str, torch.Tensor]:
    """What a linear layer keeps of a float weight [out, in]: these are the tensors the converted-weight cache holds."""
    weight = weight.float()
    if quantize == "none":
        return {"weight": weight.to(dtype).contiguous()}
    if quantize not in ("int8", "int4", "q8_0"):
        raise ValueError(f"unknown quantization {quantize!r}")
    out_features, in_features = weight.shape
    # By rows: float32 temporaries of a whole LM head (49k x 576 for SmolLM2) would peak at ~3x its size.
    starts = range(0, out_features, _CONVERT_ROWS)
    tensors = {}
    if fp16_copy:
        # Clamped to float16's range as fbgemm's packing would: packing this copy then equals packing `weight`.
        tensors["fp16"] = torch.empty(weight.shape, dtype=torch.float16)
        for start in starts:
            tensors["fp16"][start : start + _CONVERT_ROWS] = weight[start : start + _CONVERT_ROWS].clamp(-65504, 65504)
    if quantize in ("int4", "q8_0") and in_features % 32 == 0:
        to_blocks = kernels.q4_1_blocks if quantize == "int4" else kernels.q8_0_blocks
        tensors["blocks"] = torch.cat([to_blocks(weight[s : s + _CONVERT_ROWS]) for s in starts])
        return tensors
    scale = torch.cat([weight[s : s + _CONVERT_ROWS].abs().amax(dim=1) for s in starts]).clamp(min=1e-12) / 127.0
    tensors["qweight"] = torch.empty(weight.shape, dtype=torch.int8)
    for s in starts:
        rows = slice(s, s + _CONVERT_ROWS)
        tensors["qweight"][rows] = torch.round(weight[rows] / scale[rows, None]).clamp(-127, 127)
    tensors["scale"] = scale.to(torch.bfloat16)
    return tensors


# GGUF `general.file_type` values whose linear weights are 32-weight blocks of 4-bit levels: MOSTLY_Q4_0, MOSTLY_Q4_1.
_GGUF_Q4_FILE_TYPES = (2, 3)


def resolve_quantization(setting: str, gguf_metadata: dict[str, Any] | None) -> str:
    """The `quantize` setting made concrete: 'auto' is int4 for Q4_0/Q4_1 GGUFs, whose blocks int4 holds almost
    exactly (closer to float32 than int8, and half its bytes to read per token), and int8 for anything else."""
    if setting != "auto":
        return setting
    file_type = (gguf_metadata or {}).get("general.file_type")
    return "int4" if file_type in _GGUF_Q4_FILE_TYPES else "int8"


def make_linear(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> Linear:
    if "weight" in tensors:
        return DenseLinear(tensors)
    if "blocks" in tensors:
        return BlockLinear(tensors, dtype)
    return Int8Linear(tensors, dtype)


# The decode step is TorchScript: one call runs all layers without returning to Python, so per-op dispatch
# is cheaper and the GIL is released for the whole step (the asyncio thread serving streams no longer
# delays the engine between ops). Weights come in as lists; an int8 layer passes its per-channel scale, an int4
# layer on ATen's kernel its per-group (scale, zero) pairs ([in / 32, out, 2]), a layer of blocks (uint8) for the
# compiled kernel none, and `packed` their float16 copies, if any.


def _linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    packed: list[torch.classes.quantized.LinearPackedParamsBase],
    index: int,
    fp16_above_rows: int,
) -> torch.Tensor:
    """x: [rows, in] (2-D: no reshaping around the kernels, which take matrices), already in the dtype its kernel
    takes (`Decoder._input_dtype`); the result is in the kernel's own output dtype (bfloat16 out of the int8/int4
    kernels): callers cast only where they must, as an add or a multiply promotes inside the op."""
    if scale is None and weight.dtype != torch.uint8:
        return torch.nn.functional.linear(x, weight)
    if len(packed) > 0 and x.shape[0] > fp16_above_rows:
        return torch.ops.quantized.linear_dynamic_fp16(x, packed[index])
    if scale is None:
        return torch.ops.lamina_torch.block_linear(x, weight)
    if scale.dim() == 3:  # int4: per-group (scale, zero) pairs
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, weight, 32, scale)
    if x.shape[0] > 16:
        return torch.nn.functional.linear(x, weight.to(x.dtype) * scale.to(x.dtype).unsqueeze(1))
    # The kernel's cost jumps past 4 rows: several 4-row calls beat one call for a decode batch.
    parts = [torch.ops.aten._weight_int8pack_mm(x[i : i + 4], weight, scale) for i in range(0, x.shape[0], 4)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _rms_norm(h: torch.Tensor, weight: torch.Tensor, hidden_eps: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """RMSNorm of h [rows, hidden] into `out`, in the dtype the next matmul takes (the cast rides on the last
    multiply). `weight` is the norm's weight times sqrt(hidden) and `hidden_eps` (0-dim) is hidden * eps, so that
    rsqrt(sum of squares + hidden_eps) is the usual scale: five small ops where torch.rms_norm's CPU path runs
    about eight."""
    norm = torch.linalg.vector_norm(h, 2.0, [-1], True, dtype=torch.float32)
    return torch.mul(h * torch.addcmul(hidden_eps, norm, norm).rsqrt_(), weight, out=out)


def _add_norm(
    h: torch.Tensor,
    delta: torch.Tensor | None,
    weight: torch.Tensor,
    hidden_eps: torch.Tensor,
    out: torch.Tensor,
    compiled: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual stream after adding `delta` (if any), and its RMSNorm (`_rms_norm`) in `out`'s dtype: one
    compiled op, or an add and `_rms_norm`."""
    if compiled:
        h, x = torch.ops.lamina_torch.add_rms_norm(h, None if delta is None else delta.float(), weight, hidden_eps)
        return h, x.to(out.dtype)
    if delta is not None:
        h = h + delta
    return h, _rms_norm(h, weight, hidden_eps, out)


def _gated(
    gate_up: torch.Tensor, intermediate: int, dtype: torch.dtype, out: torch.Tensor, compiled: bool
) -> torch.Tensor:
    """silu(gate) * up of the fused projection's output, in `out`'s dtype; the gate in the activation `dtype`."""
    if compiled:
        return torch.ops.lamina_torch.silu_mul(gate_up.float()).to(out.dtype)
    # The gate in float32 (silu of bfloat16 would round once more): as exact as before, one cast fewer.
    gate = torch.nn.functional.silu(gate_up.narrow(1, 0, intermediate).to(dtype))
    return torch.mul(gate, gate_up.narrow(1, intermediate, intermediate), out=out)


def _decode_step(
    h: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor | None,
    length: int,
    norms: list[torch.Tensor],
    weights: list[torch.Tensor],
    scales: list[torch.Tensor | None],
    packed: list[torch.classes.quantized.LinearPackedParamsBase],
    fp16_above_rows: int,
    head_fp16_above_rows: int,
    kernel_dtype: torch.dtype,
    head_dtype: torch.dtype,
    compiled: bool,
    caches: list[torch.Tensor],
    final_norm: torch.Tensor,
    eps: float,
    n_heads: int,
    n_kv_heads: int,
    head_dim: int,
    intermediate: int,
) -> torch.Tensor:
    """h: [B, hidden] embeddings of slots 0..B-1; cos, sin: [B, 1, head_dim]; per layer i: norms[2i:2i+2] (times
    sqrt(hidden): `_rms_norm`), weights/scales[4i:4i+4] (qkv, o, gate_up, down), caches[2i:2i+2] (k, v); the last
    weight/scale is the LM head. `packed` is empty or holds the float16 copies of the quantized weights, used when
    a batch has more than `fp16_above_rows` rows (`head_fp16_above_rows` for the LM head); `kernel_dtype` and
    `head_dtype` are the dtypes the layers' matmuls and the LM head take at this batch size. Activations stay 2-D or 3-D ([B, heads, head_dim]), and parts
    are taken with `narrow`: every view is an op, and `x[:, a:b]` is two of them here."""
    batch = h.shape[0]
    dtype = h.dtype
    group = n_heads // n_kv_heads
    qk_heads = n_heads + n_kv_heads
    half = head_dim // 2
    index: list[torch.Tensor | None] = [torch.arange(batch), None, positions]
    hidden_eps = torch.full([], eps * h.shape[-1], dtype=torch.float32)
    # The matmuls' inputs, written in their dtype by the op that makes them (one buffer each, reused by all layers).
    normed = torch.empty([batch, h.shape[-1]], dtype=kernel_dtype)
    activated = torch.empty([batch, intermediate], dtype=kernel_dtype)
    # The last layer's MLP output, added to the residual stream together with the next norm.
    pending: torch.Tensor | None = None
    for i in range(len(caches) // 2):
        h, x = _add_norm(h, pending, norms[2 * i], hidden_eps, normed, compiled)
        heads = _linear(x, weights[4 * i], scales[4 * i], packed, 4 * i, fp16_above_rows)
        cache_k, cache_v = caches[2 * i], caches[2 * i + 1]
        if compiled:
            attended = torch.ops.lamina_torch.decode_attention(
                heads.float(), cos, sin, cache_k, cache_v, positions, n_heads, n_kv_heads
            )
        else:
            heads = heads.to(dtype).view(batch, qk_heads + n_kv_heads, head_dim)
            qk = heads.narrow(1, 0, qk_heads)
            qk = torch.addcmul(qk * cos, qk.roll(half, -1), sin)
            cache_k.index_put_(index, qk.narrow(1, n_heads, n_kv_heads))
            cache_v.index_put_(index, heads.narrow(1, qk_heads, n_kv_heads))
            # Fold each KV head's query group into the query axis: GQA without repeating keys.
            grouped = qk.narrow(1, 0, n_heads).reshape(batch, n_kv_heads, group, head_dim)
            keys = cache_k.narrow(0, 0, batch).narrow(2, 0, length)
            values = cache_v.narrow(0, 0, batch).narrow(2, 0, length)
            attended = torch.nn.functional.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask)
            attended = attended.reshape(batch, n_heads * head_dim)
        x = attended.to(kernel_dtype)
        attention_out = _linear(x, weights[4 * i + 1], scales[4 * i + 1], packed, 4 * i + 1, fp16_above_rows)
        h, x = _add_norm(h, attention_out, norms[2 * i + 1], hidden_eps, normed, compiled)
        gate_up = _linear(x, weights[4 * i + 2], scales[4 * i + 2], packed, 4 * i + 2, fp16_above_rows)
        x = _gated(gate_up, intermediate, dtype, activated, compiled)
        pending = _linear(x, weights[4 * i + 3], scales[4 * i + 3], packed, 4 * i + 3, fp16_above_rows)
    head_input = normed if head_dtype == kernel_dtype else normed.to(head_dtype)
    h, x = _add_norm(h, pending, final_norm, hidden_eps, head_input, compiled)
    return _linear(x, weights[-1], scales[-1], packed, len(weights) - 1, head_fp16_above_rows).float()


with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.compile, which needs a compiler
    warnings.simplefilter("ignore", DeprecationWarning)
    _scripted_decode = torch.jit.script(_decode_step)


def rope_inverse_frequencies(config: ModelConfig) -> torch.Tensor:
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    if config.rope_freq_factors is not None:
        return inv_freq / config.rope_freq_factors.double()
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old_context = scaling.get("original_max_position_embeddings", 8192)
        wavelength = 2 * math.pi / inv_freq
        scaled = torch.where(wavelength > old_context / low, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelength - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelength >= old_context / high) & (wavelength <= old_context / low)
        return torch.where(medium, smoothed, scaled)
    if kind not in (None, "default"):
        raise ValueError(f"rope scaling {kind!r} is not supported")
    return inv_freq


@dataclass
class Layer:
    attn_norm: torch.Tensor
    qkv: Linear
    o: Linear
    mlp_norm: torch.Tensor
    gate_up: Linear
    down: Linear
    cache_k: torch.Tensor  # [slots, kv_heads, positions, head_dim]: a view of the decoder's KV tensor
    cache_v: torch.Tensor
    # Beyond Llama: None where the architecture has no such part.
    qkv_bias: torch.Tensor | None = None  # Qwen 2
    qk_norm: torch.Tensor | None = None  # Qwen 3, Gemma 3: [q heads + kv heads, head_dim], per-head RMSNorm weights
    attn_out_norm: torch.Tensor | None = None  # Gemma 2/3: norms of the attention and MLP outputs
    mlp_out_norm: torch.Tensor | None = None
    sliding: bool = False


def prepare_tensors(
    config: ModelConfig,
    weights: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    quantize: str = "none",
    fp16_above_rows: int | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Convert HF-named float weights (consumed) into the tensors the decoder runs on, named `layers.{i}.{part}`,
    `embed`, `norm`, `lm_head.*`: fused projections, quantized as asked, with float16 copies where they are used.
    `progress(done, total)` is called after each layer."""
    # int4 layers always keep a float16 copy (prefill runs on it); int8 ones when bigger batches use it.
    fp16_copy = quantize == "int4" or (quantize == "int8" and fp16_above_rows is not None)
    tensors: dict[str, torch.Tensor] = {}

    def linear(name: str, weight: torch.Tensor, kind: str = quantize) -> None:
        for part, tensor in linear_tensors(weight, dtype, kind, fp16_copy).items():
            tensors[f"{name}.{part}"] = tensor

    for i in range(config.num_layers):
        p, q = f"model.layers.{i}.", f"layers.{i}."
        tensors[q + "attn_norm"] = weights.pop(p + "input_layernorm.weight").to(dtype)
        tensors[q + "mlp_norm"] = weights.pop(p + "post_attention_layernorm.weight").to(dtype)
        linear(q + "qkv", torch.cat([weights.pop(p + f"self_attn.{n}_proj.weight") for n in "qkv"]))
        linear(q + "o", weights.pop(p + "self_attn.o_proj.weight"))
        linear(
            q + "gate_up", torch.cat([weights.pop(p + "mlp.gate_proj.weight"), weights.pop(p + "mlp.up_proj.weight")])
        )
        linear(q + "down", weights.pop(p + "mlp.down_proj.weight"))
        biases = [weights.pop(p + f"self_attn.{n}_proj.bias", None) for n in "qkv"]
        if all(b is not None for b in biases):
            tensors[q + "qkv_bias"] = torch.cat(biases).to(dtype)  # type: ignore[arg-type]
        q_norm, k_norm = (
            weights.pop(p + "self_attn.q_norm.weight", None),
            weights.pop(p + "self_attn.k_norm.weight", None),
        )
        if q_norm is not None and k_norm is not None:
            stacked = [q_norm.expand(config.num_heads, -1), k_norm.expand(config.num_kv_heads, -1)]
            tensors[q + "qk_norm"] = torch.cat(stacked).to(dtype).contiguous()
        for source, target in (
            ("post_attention_output_norm", "attn_out_norm"),
            ("post_feedforward_layernorm", "mlp_out_norm"),
        ):
            norm = weights.pop(p + source + ".weight", None)
            if norm is not None:
                tensors[q + target] = norm.to(dtype)
        if progress is not None:
            progress(i + 1, config.num_layers)
    embed = weights.pop("model.embed_tokens.weight")
    tensors["embed"] = embed.to(dtype).contiguous()
    head = weights.pop("lm_head.weight", None)
    # The LM head stays 8-bit under int4: it is the most sensitive matrix, and GGUFs usually keep it in 8 bits.
    linear("lm_head", embed if head is None else head, "q8_0" if quantize == "int4" else quantize)
    tensors["norm"] = weights.pop("model.norm.weight").to(dtype)
    return tensors


def _linear_parts(tensors: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    return {key[len(name) + 1 :]: value for key, value in tensors.items() if key.startswith(name + ".")}


def untouched_zeros(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Zeros whose pages the OS supplies (already zeroed) on first touch: numpy's calloc, where torch.zeros writes
    every byte; freed, they go back to the OS at once (a mapping of their own). Zeros, not garbage: masked positions
    are still multiplied (by 0) in attention."""
    size = math.prod(shape) * dtype.itemsize
    return torch.from_numpy(np.zeros(size, dtype=np.uint8)).view(dtype).view(shape)


class Decoder:
    def __init__(
        self,
        config: ModelConfig,
        tensors: dict[str, torch.Tensor],
        *,
        dtype: torch.dtype = torch.float32,
        max_batch: int = 8,
        context_length: int | None = None,
        fp16_above_rows: int | str | None = None,
    ) -> None:
        """`tensors` as `prepare_tensors` makes them (or as the converted-weight cache holds them)."""
        self.config = config
        c = config
        self.layers: list[Layer] = []
        self.dtype = dtype
        self.max_batch = max_batch
        self.context_length = min(context_length or config.max_position, config.max_position)
        self.q_size, self.kv_size = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        self.group = c.num_heads // c.num_kv_heads
        self._kv = torch.zeros(c.num_layers, 2, 0, c.num_kv_heads, 0, c.head_dim, dtype=dtype)
        for i in range(c.num_layers):
            q = f"layers.{i}."
            self.layers.append(
                Layer(
                    attn_norm=tensors[q + "attn_norm"],
                    qkv=make_linear(_linear_parts(tensors, q + "qkv"), dtype),
                    o=make_linear(_linear_parts(tensors, q + "o"), dtype),
                    mlp_norm=tensors[q + "mlp_norm"],
                    gate_up=make_linear(_linear_parts(tensors, q + "gate_up"), dtype),
                    down=make_linear(_linear_parts(tensors, q + "down"), dtype),
                    cache_k=self._kv[i, 0],
                    cache_v=self._kv[i, 1],
                    qkv_bias=tensors.get(q + "qkv_bias"),
                    qk_norm=tensors.get(q + "qk_norm"),
                    attn_out_norm=tensors.get(q + "attn_out_norm"),
                    mlp_out_norm=tensors.get(q + "mlp_out_norm"),
                    sliding=c.slides(i),
                )
            )
        self.embed = tensors["embed"]
        self.lm_head = make_linear(_linear_parts(tensors, "lm_head"), dtype)
        self.norm = tensors["norm"]
        linears = [self.lm_head, *(x for layer in self.layers for x in (layer.qkv, layer.o, layer.gate_up, layer.down))]
        self._unpacked = [x for x in linears if isinstance(x, Int8Linear) and x.fp16 is not None]
        # Quantized only: decode batches of more than this many rows (and prefill) use the float16 copies.
        quantized = any(isinstance(x, Int8Linear) for x in linears)
        if self._unpacked and fp16_above_rows is None:  # int4: the copy exists for prefill
            fp16_above_rows = _INT8_KERNEL_MAX_ROWS
        if fp16_above_rows == "auto":
            compiled = any(isinstance(x, BlockLinear) and x.scale is None for x in linears[1:])
            fp16_above_rows = _INT8_KERNEL_MAX_ROWS if compiled else _ATEN_KERNEL_MAX_ROWS
        self.fp16_above_rows = fp16_above_rows if quantized and self._unpacked else None
        # Where ATen's int8 kernel is not vectorized (it is for AVX-512, not AVX2), the LM head takes its float16
        # copy at every batch size: on one row of an AVX2 EPYC, fbgemm's float16 GEMV reads SmolLM2's 49k x 576 head
        # in 4.8 ms against the int8 kernel's 7.5 (1 thread); on an AVX-512 Xeon the int8 kernel won, 7.0 to 8.3.
        if type(self.lm_head) is Int8Linear and self.lm_head.fp16 is not None and _HEAD_PREFERS_FP16:
            self.lm_head.fp16_above_rows = 0
        # A lower threshold set for the layers holds for the head too (0: the float16 copy for every batch).
        if isinstance(self.lm_head, Int8Linear) and self.fp16_above_rows is not None:
            self.lm_head.fp16_above_rows = min(self.lm_head.fp16_above_rows, self.fp16_above_rows)
        positions = torch.arange(self.context_length, dtype=torch.float64)
        angles = torch.outer(positions, rope_inverse_frequencies(c))
        half = c.head_dim // 2
        # rotate_half(x) * sin == roll(x, half) * sin_signed: one roll instead of slice/neg/cat.
        self.cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(dtype)
        self.sin_signed = torch.cat([-angles.sin(), angles.sin()], dim=-1).to(dtype)
        self.half = half
        self.positions = torch.arange(self.context_length)
        self.cos_local, self.sin_local = self.cos, self.sin_signed
        if c.rope_theta_local is not None:
            local = ModelConfig(**{**c.__dict__, "rope_theta": c.rope_theta_local, "rope_scaling": None})
            angles = torch.outer(positions, rope_inverse_frequencies(local))
            self.cos_local = torch.cat([angles.cos(), angles.cos()], dim=-1).to(dtype)
            self.sin_local = torch.cat([-angles.sin(), angles.sin()], dim=-1).to(dtype)
        # Llama-shaped models decode through the TorchScript step; the others through `_block` in Python.
        self.plain = (
            c.activation == "silu"
            and c.embed_scale is None
            and c.attn_scale is None
            and not (c.attn_softcap or c.final_softcap or c.sliding_window or c.rope_theta_local)
            and not any(
                x.qkv_bias is not None or x.qk_norm is not None or x.attn_out_norm is not None for x in self.layers
            )
        )
        # Where the compiled kernels are built, the TorchScript step runs its attention, norms and gate on them. With
        # quantized weights the KV cache is then float16, as llama.cpp keeps it: half the bytes per cached token, and
        # per step to attend over. `quantize: none` keeps it in `dtype`, so such a model computes what its reference
        # does.
        self._compiled_step = self.plain and dtype == torch.float32 and c.head_dim % 8 == 0 and kernels.available()
        self.kv_dtype = torch.float16 if self._compiled_step and quantized else dtype
        self._kv = self._kv.to(self.kv_dtype)
        self._attach_kv()

    @classmethod
    def from_weights(
        cls,
        config: ModelConfig,
        weights: dict[str, torch.Tensor],
        *,
        dtype: torch.dtype = torch.float32,
        quantize: str = "none",
        max_batch: int = 8,
        context_length: int | None = None,
        fp16_above_rows: int | str | None = None,
    ) -> Decoder:
        tensors = prepare_tensors(config, weights, dtype=dtype, quantize=quantize, fp16_above_rows=fp16_above_rows)
        return cls(
            config,
            tensors,
            dtype=dtype,
            max_batch=max_batch,
            context_length=context_length,
            fp16_above_rows=fp16_above_rows,
        )

    def pack(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Pack the float16 copies for fbgemm (seconds on a small CPU); the first prefill or decode does it if
        nobody did before. `progress(done, total)` after each matrix."""
        total = len(self._unpacked)
        for done, linear in enumerate(self._unpacked, 1):
            linear.pack()
            if progress is not None:
                progress(done, total)
        if total:
            self._unpacked = []
            self._scripted = self._scripted_parameters()

    @property
    def kv_shape(self) -> tuple[int, int]:
        """(slots, positions) the KV cache holds now."""
        return self._kv.shape[2], self._kv.shape[4]

    def _reserve(self, slots: int, positions: int) -> None:
        """Make room in the KV cache for slots 0..slots-1 up to `positions`. It grows by doubling (positions in
        multiples of KV_BLOCK), copying what it holds: a server holds KV for the slots and lengths in use, not
        `max_batch` x `context_length` (1.5 GB for SmolLM2-135M at float32 with 8 slots of 4,096)."""
        have_slots, have_positions = self.kv_shape
        if slots <= have_slots and positions <= have_positions:
            return
        if slots > have_slots:
            slots = min(self.max_batch, max(slots, 2 * have_slots))
        if positions > have_positions:
            blocks = -(-max(positions, 2 * have_positions) // KV_BLOCK)
            positions = min(self.context_length, blocks * KV_BLOCK)
        slots, positions = max(slots, have_slots), max(positions, have_positions)
        old = self._kv
        shape = (*old.shape[:2], slots, old.shape[3], positions, old.shape[5])
        # Not an inference tensor, though prefill and decode grow it: `write_kv` updates it outside inference mode.
        with torch.inference_mode(False):
            self._kv = untouched_zeros(shape, self.kv_dtype)
            self._kv[:, :, :have_slots, :, :have_positions] = old
            self._attach_kv()

    def free_kv(self) -> None:
        """Give the KV cache's memory back (the engine does when it has been idle for a while)."""
        if self._kv.numel():
            self._kv = self._kv[:, :, :0, :, :0].clone()
            self._attach_kv()

    def _attach_kv(self) -> None:
        for i, layer in enumerate(self.layers):
            layer.cache_k, layer.cache_v = self._kv[i, 0], self._kv[i, 1]
        self._scripted = self._scripted_parameters()

    @property
    def vocab_size(self) -> int:
        return self.embed.shape[0]

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return x * cos + x.roll(self.half, dims=-1) * sin

    def _block(self, h: torch.Tensor, layer: Layer, cos: torch.Tensor, sin: torch.Tensor, attend) -> torch.Tensor:
        c = self.config
        eps = c.rms_eps
        x = F.rms_norm(h, (c.hidden_size,), layer.attn_norm, eps)
        qkv = layer.qkv(x)
        if layer.qkv_bias is not None:
            qkv = qkv + layer.qkv_bias
        batch, tokens = qkv.shape[:2]
        heads = qkv.view(batch, tokens, c.num_heads + 2 * c.num_kv_heads, c.head_dim)
        qk = heads[:, :, : c.num_heads + c.num_kv_heads]
        if layer.qk_norm is not None:
            qk = F.rms_norm(qk, (c.head_dim,), None, eps) * layer.qk_norm
        qk = self._rope(qk, cos, sin)
        q, k, v = qk[:, :, : c.num_heads], qk[:, :, c.num_heads :], heads[:, :, c.num_heads + c.num_kv_heads :]
        out = layer.o(attend(layer, q, k, v))
        if layer.attn_out_norm is not None:
            out = F.rms_norm(out, (c.hidden_size,), layer.attn_out_norm, eps)
        h = h + out
        x = F.rms_norm(h, (c.hidden_size,), layer.mlp_norm, eps)
        gate_up = layer.gate_up(x)
        size = c.intermediate_size
        gate = (
            F.silu(gate_up[..., :size]) if c.activation == "silu" else F.gelu(gate_up[..., :size], approximate="tanh")
        )
        out = layer.down(gate * gate_up[..., size:])
        if layer.mlp_out_norm is not None:
            out = F.rms_norm(out, (c.hidden_size,), layer.mlp_out_norm, eps)
        return h + out

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(F.rms_norm(h, (self.config.hidden_size,), self.norm, self.config.rms_eps)).float()
        if self.config.final_softcap:
            logits = torch.tanh(logits / self.config.final_softcap) * self.config.final_softcap
        return logits

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed[tokens]
        if self.config.embed_scale is not None:
            h = h * torch.tensor(self.config.embed_scale, dtype=h.dtype)
        return h

    def _rope_tables(self, layer: Layer) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.cos_local, self.sin_local) if layer.sliding else (self.cos, self.sin_signed)

    def _attention(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """q: [B, heads, T, D]; keys, values: [B, kv heads, L, D]; mask: bool, broadcast to [B, 1, T, L], or None
        for causal attention from position 0."""
        c = self.config
        if not c.attn_softcap:
            return F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, is_causal=mask is None, scale=c.attn_scale, enable_gqa=True
            )
        keys, values = keys.repeat_interleave(self.group, 1), values.repeat_interleave(self.group, 1)
        scores = q @ keys.transpose(-1, -2) * (c.attn_scale or c.head_dim**-0.5)
        scores = torch.tanh(scores / c.attn_softcap) * c.attn_softcap
        if mask is None:
            mask = torch.ones(scores.shape[-2:], dtype=torch.bool).tril(scores.shape[-1] - scores.shape[-2])
        scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ values

    def _mask(self, layer: Layer, queries: torch.Tensor, end: int) -> torch.Tensor:
        """Which of positions 0..end-1 each query position (`queries`: [..., T]) sees: [..., T, end]."""
        keys = self.positions[:end]
        mask = keys <= queries[..., None]
        if layer.sliding:
            mask = mask & (queries[..., None] - keys < self.config.sliding_window)
        return mask

    @torch.inference_mode()
    def prefill(self, slot: int, tokens: list[int], start: int = 0, all_logits: bool = False) -> torch.Tensor:
        """Run `tokens` at positions start.. into `slot`; logits of the last position ([V]) or all ([T, V])."""
        self.pack()
        count = len(tokens)
        end = start + count
        if end > self.context_length:
            raise ValueError(f"sequence of {end} tokens exceeds the context length {self.context_length}")
        self._reserve(slot + 1, end)
        queries = self.positions[start:end]
        nh = self.config.num_heads

        def attend(layer: Layer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            layer.cache_k[slot, :, start:end] = k[0].transpose(0, 1)
            layer.cache_v[slot, :, start:end] = v[0].transpose(0, 1)
            keys, values = layer.cache_k[slot : slot + 1, :, :end], layer.cache_v[slot : slot + 1, :, :end]
            keys, values = keys.to(q.dtype), values.to(q.dtype)  # a float16 cache: as decode will read them
            mask = None if start == 0 and not layer.sliding else self._mask(layer, queries, end)
            out = self._attention(q.transpose(1, 2), keys, values, mask)
            return out.transpose(1, 2).reshape(1, count, nh * self.config.head_dim)

        h = self._embed(torch.tensor(tokens))[None]
        for layer in self.layers:
            cos, sin = self._rope_tables(layer)
            h = self._block(h, layer, cos[start:end][None, :, None], sin[start:end][None, :, None], attend)
        return self._head(h[0] if all_logits else h[0, -1])

    def read_kv(self, slot: int, start: int, end: int) -> torch.Tensor:
        """A copy of `slot`'s keys and values at positions start..end-1: [layers, 2, kv_heads, end - start, head_dim]."""
        return torch.stack(
            [torch.stack([x.cache_k[slot, :, start:end], x.cache_v[slot, :, start:end]]) for x in self.layers]
        )

    def write_kv(self, slot: int, start: int, kv: torch.Tensor) -> None:
        """Put keys and values `read_kv` gave into `slot` from position `start` on."""
        end = start + kv.shape[3]
        self._reserve(slot + 1, end)
        for layer, (keys, values) in zip(self.layers, kv, strict=True):
            layer.cache_k[slot, :, start:end] = keys
            layer.cache_v[slot, :, start:end] = values

    def kv_bytes_per_token(self) -> int:
        c = self.config
        return 2 * c.num_layers * c.num_kv_heads * c.head_dim * self.kv_dtype.itemsize

    def _scripted_parameters(self) -> tuple[list, list, list, list, list]:
        norms, weights, scales, packed, caches = [], [], [], [], []
        for layer in [*self.layers, None]:
            linears = [self.lm_head] if layer is None else [layer.qkv, layer.o, layer.gate_up, layer.down]
            for linear in linears:
                quantized = isinstance(linear, Int8Linear)
                weights.append(linear.qweight if quantized else linear.weight)
                scales.append(linear.scale if quantized else None)
                if quantized and linear.packed_fp16 is not None:
                    packed.append(linear.packed_fp16)
            if layer is not None:
                norms += [layer.attn_norm, layer.mlp_norm]
                caches += [layer.cache_k, layer.cache_v]
        # As `_rms_norm` takes them; the final norm last.
        norms = [x * math.sqrt(self.config.hidden_size) for x in [*norms, self.norm]]
        return norms, weights, scales, packed, caches

    def _fp16_above_rows(self, linear: Linear) -> int:
        """Above how many rows `linear` takes its float16 copy in the decode step; -1 where there are no copies
        (`packed` is then empty, so the value is never used)."""
        if self.fp16_above_rows is None or not isinstance(linear, Int8Linear):
            return -1
        return linear.fp16_above_rows if linear is self.lm_head else self.fp16_above_rows

    def _input_dtype(self, linear: Linear, rows: int) -> torch.dtype:
        """The dtype `linear` takes in the decode step for `rows` rows (see `_linear`)."""
        if not isinstance(linear, Int8Linear):
            return self.dtype
        packed = linear.packed_fp16 is not None
        if packed and rows > self._fp16_above_rows(linear):
            return torch.float32  # fbgemm's float16 GEMM
        if isinstance(linear, BlockLinear):
            return torch.float32 if linear.scale is None else torch.bfloat16  # the compiled kernel or ATen's int4
        if rows > _INT8_KERNEL_MAX_ROWS:
            return self.dtype  # int8 dequantized into a plain matmul
        return torch.bfloat16

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One token for each of slots 0..B-1 (`tokens`, `positions`: [B] int64); returns logits [B, V]."""
        self.pack()
        if not self.plain:
            return self._decode_python(tokens, positions)
        batch = tokens.shape[0]
        length = int(positions.max()) + 1
        self._reserve(batch, length)
        cos = self.cos[positions][:, None]
        sin = self.sin_signed[positions][:, None]
        # Each row sees its own keys 0..position; rows are padded to the longest with masked positions.
        # Additive (0 / -inf), made once: attention would turn a boolean mask into this in each of the layers.
        # The compiled attention needs none: it reads each row's position.
        mask = None
        if batch > 1 and not self._compiled_step:
            hidden = self.positions[:length][None, :] > positions[:, None]
            mask = torch.zeros(hidden.shape, dtype=self.dtype).masked_fill_(hidden, float("-inf"))[:, None, None, :]
        c = self.config
        norms, weights, scales, packed, caches = self._scripted
        # Plain interpretation: the profiling executor would re-specialize on every new cache length.
        with torch.jit.optimized_execution(False):
            return _scripted_decode(
                self.embed[tokens],
                cos,
                sin,
                positions,
                mask,
                length,
                norms,
                weights,
                scales,
                packed,
                self._fp16_above_rows(self.layers[0].qkv),
                self._fp16_above_rows(self.lm_head),
                self._input_dtype(self.layers[0].qkv, batch),
                self._input_dtype(self.lm_head, batch),
                self._compiled_step,
                caches,
                norms[-1],
                c.rms_eps,
                c.num_heads,
                c.num_kv_heads,
                c.head_dim,
                c.intermediate_size,
            )

    def _decode_python(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`decode` for architectures the TorchScript step does not cover, through the same `_block` as prefill."""
        batch = tokens.shape[0]
        length = int(positions.max()) + 1
        self._reserve(batch, length)
        rows = torch.arange(batch)
        nh = self.config.num_heads

        def attend(layer: Layer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            layer.cache_k[rows, :, positions] = k[:, 0]
            layer.cache_v[rows, :, positions] = v[:, 0]
            mask = self._mask(layer, positions[:, None], length)[:, None]  # [B, 1, 1, length]
            out = self._attention(
                q.transpose(1, 2), layer.cache_k[:batch, :, :length], layer.cache_v[:batch, :, :length], mask
            )
            return out.transpose(1, 2).reshape(batch, 1, nh * self.config.head_dim)

        h = self._embed(tokens)[:, None]
        for layer in self.layers:
            cos, sin = self._rope_tables(layer)
            h = self._block(h, layer, cos[positions][:, None, None], sin[positions][:, None, None], attend)
        return self._head(h[:, 0])
