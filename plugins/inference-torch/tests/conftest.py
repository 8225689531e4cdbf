"""A tiny random Llama written twice, as a Hugging Face folder and as a GGUF file, with a tiny BPE tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France.",
    "Lamina serves models with continuous batching; café, naïve, 日本語, emoji 🎉 and numbers 12345.",
    "def add(a, b):\n    return a + b\n",
] * 20


@dataclass
class TinyModel:
    hf_folder: Path
    gguf_file: Path
    reference: object  # transformers LlamaForCausalLM, float32, eval mode, with the weights both files hold


def _train_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": CHATML, "eos_token": "<|im_end|>", "bos_token": None, "add_bos_token": False})
    )
    return tokenizer


def add_bpe_vocabulary(writer, tokenizer_json: dict) -> None:
    """The trained byte-level BPE as llama.cpp's `gpt2` vocabulary, with the ChatML template."""
    vocab = tokenizer_json["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIAL_TOKENS else 1 for t in tokens])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tokenizer_json["model"]["merges"]])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_bos_token_id(vocab["<|im_start|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)


def _write_gguf(path: Path, model, tokenizer_json: dict, rope_scaling: dict | None) -> None:
    import gguf
    from lamina_inference_torch.weights import permute_qk

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)
    add_bpe_vocabulary(writer, tokenizer_json)
    if rope_scaling is not None:  # llama.cpp's way: precomputed per-frequency divisors
        from lamina_inference_torch.model import rope_inverse_frequencies
        from lamina_inference_torch.weights import ModelConfig

        head_dim = cfg.hidden_size // cfg.num_attention_heads
        plain = rope_inverse_frequencies(_plain_config(cfg, head_dim, None))
        scaled = rope_inverse_frequencies(_plain_config(cfg, head_dim, rope_scaling))
        writer.add_tensor("rope_freqs.weight", (plain / scaled).float().numpy())
        del ModelConfig
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    layer_names = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for name, tensor in model.state_dict().items():
        if name.startswith("model.layers."):
            _, _, index, rest = name.split(".", 3)
            target = f"blk.{index}.{layer_names[rest.rsplit('.', 1)[0]]}.weight"
        else:
            target = names[name]
        array = tensor.numpy().astype(np.float32)
        if target.endswith("attn_q.weight"):
            array = permute_qk(array, cfg.num_attention_heads)
        elif target.endswith("attn_k.weight"):
            array = permute_qk(array, cfg.num_key_value_heads)
        if target.endswith(("ffn_gate.weight", "ffn_up.weight")):
            # Q8_0 through the gguf package: the reference already holds these exact (dequantized) values.
            quantized = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(target, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif target == "token_embd.weight":
            writer.add_tensor(target, array.astype(np.float16))
        else:
            writer.add_tensor(target, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _plain_config(cfg, head_dim: int, rope_scaling: dict | None):
    from lamina_inference_torch.weights import ModelConfig

    return ModelConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_layers=cfg.num_hidden_layers,
        num_heads=cfg.num_attention_heads,
        num_kv_heads=cfg.num_key_value_heads,
        head_dim=head_dim,
        rms_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_parameters["rope_theta"],
        max_position=cfg.max_position_embeddings,
        tie_embeddings=False,
        rope_scaling=rope_scaling,
    )


def make_tiny_model(root: Path, *, rope_scaling: dict | None = None, tied: bool = False) -> TinyModel:
    import gguf
    import torch
    import transformers

    folder = root / "tiny-llama"
    folder.mkdir(parents=True)
    tokenizer = _train_tokenizer(folder)
    tokenizer_json = json.loads((folder / "tokenizer.json").read_text())
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling=rope_scaling,
        tie_word_embeddings=tied,
        eos_token_id=tokenizer.token_to_id("<|im_end|>"),
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.8, 1.2)
            else:
                # Bigger than HF's init so the next-token distribution is peaked (no near-ties for greedy).
                parameter.normal_(0, 0.3 if "embed" in name or "lm_head" in name else 0.15)
            if name.endswith("embed_tokens.weight"):  # the GGUF stores it as float16: keep values exact
                parameter.copy_(parameter.half().float())
            if name.endswith(("gate_proj.weight", "up_proj.weight")):  # stored as Q8_0 in the GGUF
                quantized = gguf.quants.quantize(parameter.numpy(), gguf.GGMLQuantizationType.Q8_0)
                restored = gguf.quants.dequantize(quantized, gguf.GGMLQuantizationType.Q8_0)
                parameter.copy_(torch.from_numpy(np.asarray(restored, dtype=np.float32)))
    model.save_pretrained(folder)
    gguf_file = root / "tiny-llama.Q8_0.gguf"
    _write_gguf(gguf_file, model, tokenizer_json, rope_scaling)
    return TinyModel(folder, gguf_file, model)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyModel:
    pytest.importorskip("transformers")
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_llama3_rope(tmp_path_factory) -> TinyModel:
    pytest.importorskip("transformers")
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama3"), rope_scaling=scaling, tied=True)
