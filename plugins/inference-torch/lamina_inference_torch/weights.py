"""Load Llama-family weights from a GGUF file or a Hugging Face folder as HF-named float32 tensors, each read (and
dequantized) when it is first asked for."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, MutableMapping
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
    # Beyond Llama (Qwen, Gemma, Phi-3, Mistral); the defaults are Llama's.
    architecture: str = "llama"
    activation: str = "silu"  # or "gelu_tanh" (Gemma)
    embed_scale: float | None = None  # Gemma multiplies embeddings by sqrt(hidden)
    attn_scale: float | None = None  # None: 1/sqrt(head_dim); Gemma: query_pre_attn_scalar ** -0.5
    attn_softcap: float | None = None  # Gemma 2: tanh soft-capping of attention scores
    final_softcap: float | None = None  # Gemma 2: ... and of the logits
    sliding_window: int | None = None  # keys a query sees on sliding layers: itself and window - 1 before it
    sliding_layers: list[bool] | None = None  # which layers slide; None: all of them, if sliding_window is set
    rope_theta_local: float | None = None  # Gemma 3: sliding layers use their own rope base, unscaled

    def slides(self, layer: int) -> bool:
        if self.sliding_window is None:
            return False
        return self.sliding_layers is None or self.sliding_layers[layer]


class LazyWeights(MutableMapping[str, torch.Tensor]):
    """Tensors by name, each read when first asked for. `prepare_tensors` pops every weight as it converts it,
    so a conversion holds a layer's float32 weights at a time, not the whole model's (540 MB for SmolLM2-135M)."""

    def __init__(self) -> None:
        self._items: dict[str, torch.Tensor | Callable[[], torch.Tensor]] = {}

    def defer(self, name: str, read: Callable[[], torch.Tensor]) -> None:
        self._items[name] = read

    def __getitem__(self, name: str) -> torch.Tensor:
        value = self._items[name]
        if not isinstance(value, torch.Tensor):
            value = self._items[name] = value()
        return value

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self._items[name] = value

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class LoadedModel:
    name: str
    config: ModelConfig
    weights: MutableMapping[str, torch.Tensor]  # HF names, float32 (a LazyWeights)
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


# Hugging Face `model_type`s this decoder runs.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "phi3")


class UnsupportedArchitecture(ValueError):
    """The model's architecture is not one this decoder implements; the message names the supported ones."""


def hf_config(path: Path) -> tuple[dict[str, Any], str]:
    """A Hugging Face folder's config (a multimodal wrapper's text part) and model_type; raises
    UnsupportedArchitecture, naming the supported ones, for a model_type this decoder does not run."""
    raw = json.loads((path / "config.json").read_text())
    model_type = raw.get("model_type", "llama")
    if "text_config" in raw:  # multimodal wrappers (Gemma 3 4B+): serve the text decoder
        raw = {**raw, **raw["text_config"]}
        model_type = raw.get("model_type", model_type)
    if model_type not in SUPPORTED_MODEL_TYPES:
        archs = ", ".join(raw.get("architectures") or []) or "unknown"
        raise UnsupportedArchitecture(
            f"{path}: model_type {model_type!r} ({archs}) is not supported by inline::torch; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return raw, model_type


def load_hf_folder(path: Path, progress: Callable[[int, int], None] | None = None) -> LoadedModel:
    from safetensors import safe_open

    raw, model_type = hf_config(path)
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
        rope_theta=_rope_theta(raw, "full_attention"),
        max_position=raw.get("max_position_embeddings", 2048),
        tie_embeddings=raw.get("tie_word_embeddings", model_type.startswith("gemma")),
        rope_scaling=raw.get("rope_scaling") or _rope_parameters_scaling(raw),
        architecture=model_type,
    )
    _architecture_options(config, raw, model_type)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{path}: no .safetensors files")
    weights = LazyWeights()
    for index, file in enumerate(files):
        handle = safe_open(str(file), framework="pt")
        for name in handle.keys():  # noqa: SIM118 - not a dict
            short = name.removeprefix("language_model.").removeprefix("model.language_model.")
            if short.startswith("layers.") or short in ("embed_tokens.weight", "norm.weight"):
                short = "model." + short
            weights.defer(short, lambda handle=handle, name=name: handle.get_tensor(name).float())
        if progress is not None:
            progress(index + 1, len(files))
    _to_llama_names(weights, config, model_type)
    if "lm_head.weight" not in weights:
        config.tie_embeddings = True
    return LoadedModel(model_name(path), config, weights)


def _rope_theta(raw: dict[str, Any], layer_type: str) -> float:
    params = raw.get("rope_parameters") or {}
    params = params.get(layer_type, params)  # Gemma 3 in transformers 5: one entry per layer type
    return float(raw.get("rope_theta") or params.get("rope_theta", 10000.0))


def _rope_parameters_scaling(raw: dict[str, Any]) -> dict[str, Any] | None:
    # transformers 5 folds rope_scaling into rope_parameters; only a non-default rope_type means scaling.
    params = raw.get("rope_parameters") or {}
    params = params.get("full_attention", params)
    if params and params.get("rope_type", "default") != "default":
        return params
    return None


def _architecture_options(config: ModelConfig, raw: dict[str, Any], model_type: str) -> None:
    """Set what differs from Llama, reading both transformers 4 and 5 style configs."""
    layers = config.num_layers
    layer_types = raw.get("layer_types")
    window = raw.get("sliding_window")
    if model_type in ("qwen2", "qwen3"):
        window = window if raw.get("use_sliding_window") else None
        if window and not layer_types:
            start = raw.get("max_window_layers", layers)
            layer_types = ["sliding_attention" if i >= start else "full_attention" for i in range(layers)]
    if model_type.startswith("gemma"):
        config.activation = "gelu_tanh"
        config.embed_scale = config.hidden_size**0.5
        config.attn_scale = float(raw.get("query_pre_attn_scalar") or config.head_dim) ** -0.5
        if model_type == "gemma2":
            config.attn_softcap = raw.get("attn_logit_softcapping")
            config.final_softcap = raw.get("final_logit_softcapping")
            layer_types = layer_types or [
                "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)
            ]
        elif model_type in ("gemma3", "gemma3_text"):
            pattern = raw.get("sliding_window_pattern") or raw.get("_sliding_window_pattern") or 6
            layer_types = layer_types or [
                "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)
            ]
            params = raw.get("rope_parameters") or {}
            local = params.get("sliding_attention", {}).get("rope_theta") or raw.get("rope_local_base_freq", 10000.0)
            config.rope_theta_local = float(local)
    if window:
        config.sliding_window = int(window)
        if layer_types:
            config.sliding_layers = [kind == "sliding_attention" for kind in layer_types]
    if (raw.get("rope_parameters") or {}).get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0)) != 1.0:
        raise UnsupportedArchitecture(f"{model_type}: partial rotary embeddings are not supported by inline::torch")


def _to_llama_names(weights: MutableMapping[str, torch.Tensor], config: ModelConfig, model_type: str) -> None:
    """Rename (and split) other architectures' tensors to the Llama names `prepare_tensors` reads. Extra norms keep
    names of their own: `post_attention_output_norm` (Gemma's norm of the attention output, which Gemma calls
    post_attention_layernorm) and `post_feedforward_layernorm`; q/k norms and q/k/v biases keep theirs."""
    _split_fused(weights, config)
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        if model_type in ("gemma2", "gemma3", "gemma3_text"):
            weights[p + "post_attention_output_norm.weight"] = weights.pop(p + "post_attention_layernorm.weight")
            weights[p + "post_attention_layernorm.weight"] = weights.pop(p + "pre_feedforward_layernorm.weight")
    if model_type.startswith("gemma"):  # Gemma's RMSNorm scales by (1 + weight); llama.cpp's GGUFs store 1 + weight
        for name in weights:
            if name.endswith("norm.weight"):
                weights[name] = weights[name] + 1.0


def _split_fused(weights: MutableMapping[str, torch.Tensor], config: ModelConfig) -> None:
    """Phi-3's fused q/k/v and gate/up projections, as separate tensors."""
    q_size, kv_size = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        fused = weights.pop(p + "self_attn.qkv_proj.weight", None)
        if fused is not None:
            q, k, v = fused.split([q_size, kv_size, kv_size])
            weights.update({p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k})
            weights[p + "self_attn.v_proj.weight"] = v
        fused = weights.pop(p + "mlp.gate_up_proj.weight", None)
        if fused is not None:
            gate, up = fused.chunk(2)
            weights.update({p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up})


# GGUF

_DEQUANTIZE_ROWS = 4096
# GGUF architectures this decoder runs (Mistral GGUFs are `llama`: llama.cpp converts them as Llama).
SUPPORTED_GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")
# How many layers one sliding/global cycle has where a GGUF gives no `attention.sliding_window_pattern`: llama.cpp's
# defaults (the last layer of each cycle is global; 0: every layer slides).
_SLIDING_PATTERN = {"gemma2": 2, "gemma3": 6}


def _gguf_tensor_names(arch: str) -> dict[str, str]:
    """GGUF tensor names (from gguf's own tables) -> the HF-style names `prepare_tensors` reads; `{bid}` for layers.
    Gemma's extra norms get the names the safetensors path gives them; Phi-3's fused tensors are split later."""
    import gguf

    t = gguf.MODEL_TENSOR
    names = {
        t.TOKEN_EMBD: "model.embed_tokens",
        t.OUTPUT_NORM: "model.norm",
        t.OUTPUT: "lm_head",
        t.ATTN_NORM: "model.layers.{bid}.input_layernorm",
        t.ATTN_Q: "model.layers.{bid}.self_attn.q_proj",
        t.ATTN_K: "model.layers.{bid}.self_attn.k_proj",
        t.ATTN_V: "model.layers.{bid}.self_attn.v_proj",
        t.ATTN_QKV: "model.layers.{bid}.self_attn.qkv_proj",
        t.ATTN_OUT: "model.layers.{bid}.self_attn.o_proj",
        t.ATTN_Q_NORM: "model.layers.{bid}.self_attn.q_norm",
        t.ATTN_K_NORM: "model.layers.{bid}.self_attn.k_norm",
        t.ATTN_POST_NORM: "model.layers.{bid}.post_attention_output_norm",
        t.FFN_NORM: "model.layers.{bid}.post_attention_layernorm",
        t.FFN_POST_NORM: "model.layers.{bid}.post_feedforward_layernorm",
        t.FFN_GATE: "model.layers.{bid}.mlp.gate_proj",
        # Phi-3 keeps gate and up fused in ffn_up (and has no ffn_gate).
        t.FFN_UP: "model.layers.{bid}.mlp." + ("gate_up_proj" if arch == "phi3" else "up_proj"),
        t.FFN_DOWN: "model.layers.{bid}.mlp.down_proj",
    }
    return {gguf.TENSOR_NAMES[kind]: target for kind, target in names.items()}


def hf_name(gguf_name: str, arch: str = "llama") -> str | None:
    table = _gguf_tensor_names(arch)
    base, _, kind = gguf_name.rpartition(".")
    if kind not in ("weight", "bias"):
        return None
    if base in table:
        return f"{table[base]}.{kind}"
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", base)
    if match and f"blk.{{bid}}.{match[2]}" in table:
        return table[f"blk.{{bid}}.{match[2]}"].format(bid=match[1]) + f".{kind}"
    return None


def gguf_metadata(reader: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for key, value in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        metadata[key] = value.contents()
    return metadata


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """A GGUF file's key/values alone (tokenizer, chat template, shape), without reading its tensors."""
    return gguf_metadata(open_gguf(path))


def open_gguf(path: Path) -> Any:
    """`gguf.GGUFReader` over a plain ndarray view of the file's memory map. The reader slices its data once per
    field part (~250,000 slices for a 49k-token vocabulary), and each slice of numpy's `memmap` subclass pays for
    `__array_finalize__`: reading SmolLM2's header took seconds, most of a cold start."""
    return _plain_array_reader()(str(path))


@functools.cache
def _plain_array_reader() -> type:
    import gguf

    class PlainArrayReader(gguf.GGUFReader):  # type: ignore[misc,unused-ignore]
        @property  # type: ignore[misc,unused-ignore]
        def data(self) -> np.ndarray:
            return self._plain

        @data.setter
        def data(self, mapped: np.ndarray) -> None:
            self._plain = mapped.view(np.ndarray)  # the view keeps the map (its base) alive

    return PlainArrayReader


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

    reader = open_gguf(path)
    meta = gguf_metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise UnsupportedArchitecture(
            f"{path}: GGUF architecture {arch!r} is not supported by inline::torch; "
            f"supported: {', '.join(SUPPORTED_GGUF_ARCHITECTURES)} (and as Hugging Face folders: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)})"
        )

    def get(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    tensors = {t.name: t for t in reader.tensors}
    vocab = get("vocab_size") or len(meta.get("tokenizer.ggml.tokens", ())) or tensors["token_embd.weight"].shape[-1]
    head_dim = int(get("attention.key_length") or hidden // heads)
    rotary = get("rope.dimension_count")
    if rotary is not None and int(rotary) != head_dim:
        raise UnsupportedArchitecture(f"{path}: partial rotary embeddings are not supported by inline::torch")
    if any(name.startswith("rope_factors_") for name in tensors):
        raise UnsupportedArchitecture(f"{path}: LongRoPE scaling (Phi-3 128k) is not supported by inline::torch")
    rope_scaling = None
    if get("rope.scaling.type") in {"linear"}:
        rope_scaling = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    layers = int(get("block_count"))
    config = ModelConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(get("attention.head_count_kv", heads)),
        head_dim=head_dim,
        rms_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        max_position=int(get("context_length", 2048)),
        tie_embeddings="output.weight" not in tensors,
        rope_scaling=rope_scaling,
        architecture=arch,
    )
    _gguf_architecture_options(config, arch, get)
    weights = LazyWeights()
    done = 0

    def read(name: str) -> torch.Tensor:
        nonlocal done
        tensor = tensors[name]
        shape = [int(d) for d in reversed(tensor.shape)]
        if len(shape) == 2 and tensor.data.ndim == 2 and tensor.data.shape[0] == shape[0]:
            # By rows: gguf's dequantizers make several float32 temporaries of their input's size.
            array = np.empty(shape, dtype=np.float32)
            for start in range(0, shape[0], _DEQUANTIZE_ROWS):
                rows = tensor.data[start : start + _DEQUANTIZE_ROWS]
                array[start : start + len(rows)] = gguf.quants.dequantize(rows, tensor.tensor_type)
        else:
            array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            array = np.asarray(array, dtype=np.float32).reshape(shape)
        # Only llama.cpp's Llama conversion permutes q/k rows (interleaved rope); the others keep HF's layout.
        if arch == "llama" and name.endswith("attn_q.weight"):
            array = unpermute_qk(array, config.num_heads)
        elif arch == "llama" and name.endswith("attn_k.weight"):
            array = unpermute_qk(array, config.num_kv_heads)
        if not array.flags.writeable:  # F32 tensors come straight from the read-only memory map
            array = array.copy()
        done += 1
        if progress is not None:
            progress(done, len(tensors))
        return torch.from_numpy(np.ascontiguousarray(array))

    for name in tensors:
        if name == "rope_freqs.weight":
            config.rope_freq_factors = read(name).clone()
        elif (target := hf_name(name, arch)) is not None:
            weights.defer(target, lambda name=name: read(name))
    _split_fused(weights, config)
    return LoadedModel(model_name(path), config, weights, gguf_metadata=meta)


def _gguf_architecture_options(config: ModelConfig, arch: str, get: Callable[..., Any]) -> None:
    """What differs from Llama, from the keys llama.cpp's converter writes (and llama.cpp's defaults without them)."""
    window = int(get("attention.sliding_window") or 0)
    if window:
        config.sliding_window = window
        pattern = get("attention.sliding_window_pattern", _SLIDING_PATTERN.get(arch, 0))
        if isinstance(pattern, list):
            config.sliding_layers = [bool(x) for x in pattern]
        elif pattern:
            config.sliding_layers = [i % pattern < pattern - 1 for i in range(config.num_layers)]
    if arch.startswith("gemma"):
        config.activation = "gelu_tanh"
        config.embed_scale = config.hidden_size**0.5
        # llama.cpp's rule: 1/sqrt(head_dim), but Gemma 2/3 27B scale queries by 1/sqrt(hidden / heads).
        is_27b = config.num_layers == {"gemma2": 46, "gemma3": 62}.get(arch)
        per_head = config.hidden_size / config.num_heads if is_27b else config.head_dim
        config.attn_scale = float(get("attention.scale") or per_head**-0.5)
        config.attn_softcap = get("attn_logit_softcapping") if arch == "gemma2" else None
        config.final_softcap = get("final_logit_softcapping")
        if arch == "gemma2" and not window:  # llama.cpp's default window for Gemma 2
            config.sliding_window = 4096
            config.sliding_layers = [i % 2 == 0 for i in range(config.num_layers)]
        if arch == "gemma3" and window:
            config.rope_theta_local = float(get("rope.freq_base_swa") or 10000.0)
