"""A Llama-family decoder written for serving: fused projections, a preallocated slot KV cache, few ops per layer.

The KV cache holds `max_batch` slots of `context_length` positions per layer. `prefill` runs one sequence's
prompt (or a chunk of it) into one slot; `decode` advances slots 0..B-1 by one token each in one batched
forward, every row at its own position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lamina_inference_torch.weights import ModelConfig

# Above this many rows a matmul is compute-bound: int8 weights are expanded rather than using the
# weight-only kernel, which is built for skinny (decode) activations.
_INT8_KERNEL_MAX_ROWS = 16


class DenseLinear:
    def __init__(self, weight: torch.Tensor, dtype: torch.dtype) -> None:
        self.weight = weight.to(dtype).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Int8Linear:
    """Weight-only int8, symmetric per output channel; activations go through bfloat16 for the CPU kernel."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype) -> None:
        weight = weight.float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.qweight = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        self.scale = scale.to(torch.bfloat16)
        self.dtype = dtype
        self.in_features = weight.shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] > _INT8_KERNEL_MAX_ROWS:
            out = F.linear(rows, self.qweight.to(self.dtype) * self.scale.to(self.dtype)[:, None])
        else:
            out = torch.ops.aten._weight_int8pack_mm(rows.to(torch.bfloat16), self.qweight, self.scale).to(self.dtype)
        return out.view(*x.shape[:-1], -1)


Linear = DenseLinear | Int8Linear
QUANTIZERS = {"none": DenseLinear, "int8": Int8Linear}


def make_linear(weight: torch.Tensor, dtype: torch.dtype, quantize: str) -> Linear:
    return QUANTIZERS[quantize](weight, dtype)


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
    cache_k: torch.Tensor  # [slots, kv_heads, context, head_dim]
    cache_v: torch.Tensor


class Decoder:
    def __init__(
        self,
        config: ModelConfig,
        weights: dict[str, torch.Tensor],
        *,
        dtype: torch.dtype = torch.float32,
        quantize: str = "none",
        max_batch: int = 8,
        context_length: int | None = None,
    ) -> None:
        self.config = config
        self.dtype = dtype
        self.max_batch = max_batch
        self.context_length = min(context_length or config.max_position, config.max_position)
        c = config
        self.q_size, self.kv_size = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        self.group = c.num_heads // c.num_kv_heads
        self.layers: list[Layer] = []
        for i in range(c.num_layers):
            p = f"model.layers.{i}."
            qkv = torch.cat([weights.pop(p + f"self_attn.{n}_proj.weight") for n in "qkv"])
            gate_up = torch.cat([weights.pop(p + "mlp.gate_proj.weight"), weights.pop(p + "mlp.up_proj.weight")])
            cache_shape = (max_batch, c.num_kv_heads, self.context_length, c.head_dim)
            self.layers.append(
                Layer(
                    attn_norm=weights.pop(p + "input_layernorm.weight").to(dtype),
                    qkv=make_linear(qkv, dtype, quantize),
                    o=make_linear(weights.pop(p + "self_attn.o_proj.weight"), dtype, quantize),
                    mlp_norm=weights.pop(p + "post_attention_layernorm.weight").to(dtype),
                    gate_up=make_linear(gate_up, dtype, quantize),
                    down=make_linear(weights.pop(p + "mlp.down_proj.weight"), dtype, quantize),
                    cache_k=torch.zeros(cache_shape, dtype=dtype),
                    cache_v=torch.zeros(cache_shape, dtype=dtype),
                )
            )
        embed = weights.pop("model.embed_tokens.weight")
        self.embed = embed.to(dtype)
        head = weights.pop("lm_head.weight", None)
        self.lm_head = make_linear(embed if head is None else head, dtype, quantize)
        self.norm = weights.pop("model.norm.weight").to(dtype)
        positions = torch.arange(self.context_length, dtype=torch.float64)
        angles = torch.outer(positions, rope_inverse_frequencies(c))
        half = c.head_dim // 2
        # rotate_half(x) * sin == roll(x, half) * sin_signed: one roll instead of slice/neg/cat.
        self.cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(dtype)
        self.sin_signed = torch.cat([-angles.sin(), angles.sin()], dim=-1).to(dtype)
        self.half = half
        self.positions = torch.arange(self.context_length)

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
        batch, tokens = qkv.shape[:2]
        heads = qkv.view(batch, tokens, c.num_heads + 2 * c.num_kv_heads, c.head_dim)
        qk = self._rope(heads[:, :, : c.num_heads + c.num_kv_heads], cos, sin)
        q, k, v = qk[:, :, : c.num_heads], qk[:, :, c.num_heads :], heads[:, :, c.num_heads + c.num_kv_heads :]
        h = h + layer.o(attend(layer, q, k, v))
        x = F.rms_norm(h, (c.hidden_size,), layer.mlp_norm, eps)
        gate_up = layer.gate_up(x)
        size = c.intermediate_size
        return h + layer.down(F.silu(gate_up[..., :size]) * gate_up[..., size:])

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(F.rms_norm(h, (self.config.hidden_size,), self.norm, self.config.rms_eps)).float()

    @torch.inference_mode()
    def prefill(self, slot: int, tokens: list[int], start: int = 0, all_logits: bool = False) -> torch.Tensor:
        """Run `tokens` at positions start.. into `slot`; logits of the last position ([V]) or all ([T, V])."""
        count = len(tokens)
        end = start + count
        if end > self.context_length:
            raise ValueError(f"sequence of {end} tokens exceeds the context length {self.context_length}")
        cos = self.cos[start:end][None, :, None]
        sin = self.sin_signed[start:end][None, :, None]
        mask = None
        if start > 0:
            mask = self.positions[:end][None, :] <= self.positions[start:end][:, None]
        nh = self.config.num_heads

        def attend(layer: Layer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            layer.cache_k[slot, :, start:end] = k[0].transpose(0, 1)
            layer.cache_v[slot, :, start:end] = v[0].transpose(0, 1)
            keys, values = layer.cache_k[slot : slot + 1, :, :end], layer.cache_v[slot : slot + 1, :, :end]
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), keys, values, attn_mask=mask, is_causal=mask is None, enable_gqa=True
            )
            return out.transpose(1, 2).reshape(1, count, nh * self.config.head_dim)

        h = self.embed[torch.tensor(tokens)][None]
        for layer in self.layers:
            h = self._block(h, layer, cos, sin, attend)
        return self._head(h[0] if all_logits else h[0, -1])

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One token for each of slots 0..B-1 (`tokens`, `positions`: [B] int64); returns logits [B, V]."""
        batch = tokens.shape[0]
        length = int(positions.max()) + 1
        rows = torch.arange(batch)
        cos = self.cos[positions][:, None, None]
        sin = self.sin_signed[positions][:, None, None]
        # Each row sees its own keys 0..position; rows are padded to the longest with masked positions.
        mask = None if batch == 1 else (self.positions[:length][None, :] <= positions[:, None])[:, None, None, :]
        c = self.config

        def attend(layer: Layer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            layer.cache_k[rows, :, positions] = k[:, 0]
            layer.cache_v[rows, :, positions] = v[:, 0]
            keys, values = layer.cache_k[:batch, :, :length], layer.cache_v[:batch, :, :length]
            # Fold each KV head's query group into the query axis: GQA without repeating keys.
            grouped = q.reshape(batch, c.num_kv_heads, self.group, c.head_dim)
            out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask)
            return out.reshape(batch, 1, self.q_size)

        h = self.embed[tokens][:, None]
        for layer in self.layers:
            h = self._block(h, layer, cos, sin, attend)
        return self._head(h[:, 0])
