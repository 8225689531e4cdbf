"""Load Llama-family weights from a GGUF file or a Hugging Face folder into HF-named float32 tensors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Quant suffixes stripped from a file stem to get the model's name: "SmolLM2-135M-Instruct.Q4_1" -> "SmolLM2-135M-Instruct".
_QUANT_SUFFIX = re.compile(r"[.\-_](?:[QqIi]Q?\d[\w]*|[Ff]16|[Ff]32|[Bb][Ff]16)$")


@dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    max_position: int
    tie_embeddings: bool
    rope_scaling: dict[str, Any] | None = None
    # llama.cpp stores llama3 rope scaling precomputed as per-frequency divisors.
    rope_freq_factors: torch.Tensor | None = field(default=None, repr=False)


@dataclass
class LoadedModel:
    name: str
    config: ModelConfig
    weights: dict[str, torch.Tensor]  # HF names, float32
    gguf_metadata: dict[str, Any] | None = None  # GGUF key/values, for the tokenizer and chat template


def model_name(path: Path) -> str:
    if path.is_dir():
        return path.name
    return _QUANT_SUFFIX.sub("", path.stem)


def load_model(path: Path, progress: Callable[[int, int], None] | None = None) -> LoadedModel:
    """`progress(done, total)` is called after each tensor read."""
    if path.is_dir():
        return load_hf_folder(path, progress)
    if path.suffix == ".gguf":
        return load_gguf(path, progress)
    raise ValueError(f"{path}: expected a .gguf file or a Hugging Face model folder")


# Hugging Face folders


def load_hf_folder(path: Path, progress: Callable[[int, int], None] | None = None) -> LoadedModel:
    from safetensors.torch import load_file

    raw = json.loads((path / "config.json").read_text())
    archs = raw.get("architectures") or ["LlamaForCausalLM"]
    if raw.get("model_type", "llama") not in {"llama", "mistral", "qwen2", "smollm3"} and "Llama" not in archs[0]:
        raise ValueError(f"{path}: model_type {raw.get('model_type')!r} is not a Llama-family decoder")
    heads = raw["num_attention_heads"]
    config = ModelConfig(
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        intermediate_size=raw["intermediate_size"],
        num_layers=raw["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=raw.get("num_key_value_heads") or heads,
        head_dim=raw.get("head_dim") or raw["hidden_size"] // heads,
        rms_eps=raw.get("rms_norm_eps", 1e-6),
        rope_theta=raw.get("rope_theta") or (raw.get("rope_parameters") or {}).get("rope_theta", 10000.0),
        max_position=raw.get("max_position_embeddings", 2048),
        tie_embeddings=raw.get("tie_word_embeddings", False),
        rope_scaling=raw.get("rope_scaling") or _rope_parameters_scaling(raw),
    )
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{path}: no .safetensors files")
    weights: dict[str, torch.Tensor] = {}
    for index, file in enumerate(files):
        for name, tensor in load_file(str(file)).items():
            weights[name] = tensor.float()
        if progress is not None:
            progress(index + 1, len(files))
    if "lm_head.weight" not in weights:
        config.tie_embeddings = True
    return LoadedModel(model_name(path), config, weights)


def _rope_parameters_scaling(raw: dict[str, Any]) -> dict[str, Any] | None:
    # transformers 5 folds rope_scaling into rope_parameters; only a non-default rope_type means scaling.
    params = raw.get("rope_parameters")
    if params and params.get("rope_type", "default") != "default":
        return params
    return None


# GGUF

_GGUF_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GGUF_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def hf_name(gguf_name: str) -> str | None:
    if gguf_name in _GGUF_GLOBAL_NAMES:
        return _GGUF_GLOBAL_NAMES[gguf_name]
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if match and match[2] in _GGUF_LAYER_NAMES:
        return f"model.layers.{match[1]}.{_GGUF_LAYER_NAMES[match[2]]}.{match[3]}"
    return None


def gguf_metadata(reader: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for key, value in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        metadata[key] = value.contents()
    return metadata


def unpermute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's convert-time permutation of q/k rows (interleaved rope pairs -> HF's split halves)."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def permute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's permutation (HF -> GGUF); the tests write GGUF files with it."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def load_gguf(path: Path, progress: Callable[[int, int], None] | None = None) -> LoadedModel:
    import gguf

    reader = gguf.GGUFReader(str(path))
    meta = gguf_metadata(reader)
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: GGUF architecture {arch!r} is not supported (only 'llama')")

    def get(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    tensors = {t.name: t for t in reader.tensors}
    vocab = get("vocab_size") or len(meta.get("tokenizer.ggml.tokens", ())) or tensors["token_embd.weight"].shape[-1]
    rope_scaling = None
    if get("rope.scaling.type") in {"linear"}:
        rope_scaling = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    config = ModelConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")),
        num_layers=int(get("block_count")),
        num_heads=heads,
        num_kv_heads=int(get("attention.head_count_kv", heads)),
        head_dim=int(get("attention.key_length") or get("rope.dimension_count") or hidden // heads),
        rms_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        max_position=int(get("context_length", 2048)),
        tie_embeddings="output.weight" not in tensors,
        rope_scaling=rope_scaling,
    )
    weights: dict[str, torch.Tensor] = {}
    for index, (name, tensor) in enumerate(tensors.items()):
        if progress is not None:
            progress(index, len(tensors))
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        array = np.asarray(array, dtype=np.float32).reshape([int(d) for d in reversed(tensor.shape)])
        if name == "rope_freqs.weight":
            config.rope_freq_factors = torch.from_numpy(array.copy())
            continue
        target = hf_name(name)
        if target is None:
            continue
        if name.endswith("attn_q.weight"):
            array = unpermute_qk(array, config.num_heads)
        elif name.endswith("attn_k.weight"):
            array = unpermute_qk(array, config.num_kv_heads)
        if not array.flags.writeable:  # F32 tensors come straight from the read-only memory map
            array = array.copy()
        weights[target] = torch.from_numpy(np.ascontiguousarray(array))
    return LoadedModel(model_name(path), config, weights, gguf_metadata=meta)
