"""Qwen 2/3, Gemma 2/3, Phi-3 and Mistral from GGUF files, against transformers.

Each tiny random checkpoint of test_architectures.py is written to GGUF the way llama.cpp's converter lays it out:
tensor names from gguf's own `TensorNameMap` for the architecture, metadata through `GGUFWriter`'s keys, Gemma's
norms stored as 1 + weight, q/k rows permuted for `llama` (Mistral) only, Phi-3's projections left fused. The
matrices are stored as F16, Q8_0, Q4_1 and Q5_0 (gguf's own quantizers); the reference model is given the
dequantized values first, so logits must agree as closely as for the safetensors folders.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from conftest import add_bpe_vocabulary  # noqa: E402
from lamina_inference_torch.engine import Engine  # noqa: E402
from lamina_inference_torch.model import Decoder  # noqa: E402
from lamina_inference_torch.sampling import SamplingParams  # noqa: E402
from lamina_inference_torch.tokenizer import load_tokenizer  # noqa: E402
from lamina_inference_torch.weights import UnsupportedArchitecture, load_model, permute_qk, unpermute_qk  # noqa: E402
from test_architectures import ARCHITECTURES, WINDOW, make_checkpoint  # noqa: E402
from test_decoder import PROMPTS, run_engine  # noqa: E402

# The GGUF architecture llama.cpp's converter gives each (Mistral is converted as Llama).
GGUF_ARCH = {
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen2-sliding": gguf.MODEL_ARCH.QWEN2,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
    "gemma2": gguf.MODEL_ARCH.GEMMA2,
    "gemma3": gguf.MODEL_ARCH.GEMMA3,
    "phi3": gguf.MODEL_ARCH.PHI3,
    "mistral": gguf.MODEL_ARCH.LLAMA,
}
# llama.cpp scales Gemma's queries by 1/sqrt(head_dim) (its GGUFs carry no query_pre_attn_scalar): the checkpoints
# use that value, where test_architectures.py checks the safetensors path with others.
GGUF_OPTIONS = {"gemma2": {"query_pre_attn_scalar": 16}, "gemma3": {"query_pre_attn_scalar": 16}}
# Matrices cycle through these storage types; norms and biases stay F32, as llama.cpp keeps them.
MATRIX_TYPES = [
    gguf.GGMLQuantizationType.F16,
    gguf.GGMLQuantizationType.Q8_0,
    gguf.GGMLQuantizationType.Q4_1,
    gguf.GGMLQuantizationType.Q5_0,
]


def _stored(array: np.ndarray, kind: gguf.GGMLQuantizationType) -> tuple[np.ndarray, np.ndarray]:
    """(what the file holds, the float32 values it decodes to)."""
    if kind == gguf.GGMLQuantizationType.F16:
        half = array.astype(np.float16)
        return half, half.astype(np.float32)
    quantized = gguf.quants.quantize(array, kind)
    return quantized, np.asarray(gguf.quants.dequantize(quantized, kind), dtype=np.float32).reshape(array.shape)


def write_gguf(path, reference, name: str) -> None:
    """Write `reference` (a transformers model, changed in place to hold the stored values) as llama.cpp would."""
    cfg = reference.config
    arch = GGUF_ARCH[name]
    gemma = cfg.model_type.startswith("gemma")
    # The folder's settings as the safetensors path reads them (test_architectures.py checks that reading).
    ours = load_model(path.parent / f"tiny-{name}").config
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(ours.head_dim)
    writer.add_value_length(ours.head_dim)
    writer.add_rope_dimension_count(ours.head_dim)
    writer.add_rope_freq_base(ours.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    if ours.sliding_window:
        writer.add_sliding_window(ours.sliding_window)
        if ours.sliding_layers is not None:
            writer.add_sliding_window_pattern(ours.sliding_layers)
    if ours.rope_theta_local is not None:
        writer.add_rope_freq_base_swa(ours.rope_theta_local)
    if ours.attn_softcap:
        writer.add_attn_logit_softcapping(ours.attn_softcap)
    if ours.final_softcap:
        writer.add_final_logit_softcapping(ours.final_softcap)
    add_bpe_vocabulary(writer, json.loads((path.parent / f"tiny-{name}" / "tokenizer.json").read_text()))
    names = gguf.get_tensor_name_map(arch, cfg.num_hidden_layers)
    matrices = 0
    with torch.no_grad():
        for hf_name, parameter in reference.state_dict(keep_vars=True).items():
            if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
                continue
            target = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            assert target is not None, f"gguf has no name for {hf_name} in {arch.name}"
            array = parameter.detach().numpy().astype(np.float32)
            if gemma and hf_name.endswith("norm.weight"):
                array = array + 1.0  # llama.cpp stores Gemma's (1 + weight) scale
            if arch == gguf.MODEL_ARCH.LLAMA and target.endswith(("attn_q.weight", "attn_k.weight")):
                heads = cfg.num_attention_heads if target.endswith("attn_q.weight") else cfg.num_key_value_heads
                array = permute_qk(array, heads)
            if array.ndim == 2:
                kind = MATRIX_TYPES[matrices % len(MATRIX_TYPES)]
                matrices += 1
                stored, values = _stored(array, kind)
                if kind == gguf.GGMLQuantizationType.F16:
                    writer.add_tensor(target, stored)
                else:
                    writer.add_tensor(target, stored, raw_shape=stored.shape, raw_dtype=kind)
                if arch == gguf.MODEL_ARCH.LLAMA and target.endswith(("attn_q.weight", "attn_k.weight")):
                    values = unpermute_qk(values, heads)  # the reference keeps HF's row order
                parameter.copy_(torch.from_numpy(values))
            else:
                writer.add_tensor(target, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module", params=sorted(GGUF_ARCH))
def gguf_checkpoint(request, tmp_path_factory):
    config_class, model_class, options = ARCHITECTURES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    reference = make_checkpoint(
        root / f"tiny-{request.param}", config_class, model_class, {**options, **GGUF_OPTIONS.get(request.param, {})}
    )
    path = root / f"tiny-{request.param}.gguf"
    write_gguf(path, reference, request.param)
    return request.param, path, reference


def test_gguf_logits_and_greedy_generation_match_transformers(gguf_checkpoint):
    name, path, reference = gguf_checkpoint
    loaded = load_model(path)
    assert loaded.config.architecture == gguf.MODEL_ARCH_NAMES[GGUF_ARCH[name]]
    tokenizer = load_tokenizer(path, loaded.gguf_metadata)
    hf_tokenizer = load_tokenizer(path.parent / f"tiny-{name}", None)
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    assert prompts == [hf_tokenizer.encode(p) for p in PROMPTS]
    assert max(len(p) for p in prompts) > WINDOW
    decoder = Decoder.from_weights(loaded.config, loaded.weights, max_batch=4, context_length=256)
    for ids in prompts:
        with torch.no_grad():
            expected = reference(torch.tensor([ids])).logits[0]
        torch.testing.assert_close(decoder.prefill(0, ids, all_logits=True), expected, atol=1e-4, rtol=0)
    # A batched decode step, rows at different positions, agrees with the full prefill.
    ids = prompts[3]
    full = decoder.prefill(0, ids, all_logits=True)
    decoder.prefill(1, ids[:-1])
    stepped = decoder.decode(torch.tensor([ids[0], ids[-1]]), torch.tensor([0, len(ids) - 1]))
    torch.testing.assert_close(stepped[1], full[-1], atol=1e-4, rtol=0)
    engine = Engine(decoder, tokenizer, threads=1, prefill_chunk=8)
    try:
        ours = run_engine(engine, prompts[:2], [SamplingParams(temperature=0)] * 2, max_tokens=20)
    finally:
        engine.close()
    for ids, result in zip(prompts[:2], ours, strict=True):
        with torch.no_grad():
            expected = reference.generate(
                torch.tensor([ids]), max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0
            )[0, len(ids) :].tolist()
        stop_at = next((i for i, t in enumerate(expected) if t in tokenizer.stop_token_ids), None)
        assert result["tokens"] == expected[: None if stop_at is None else stop_at + 1]


def test_unsupported_gguf_architecture_is_named(tmp_path):
    path = tmp_path / "tiny-gpt2.gguf"
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedArchitecture) as raised:
        load_model(path)
    message = str(raised.value)
    assert "'gpt2'" in message and "gemma3" in message and "phi3" in message
