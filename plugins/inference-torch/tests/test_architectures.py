"""Qwen 2/3, Gemma 2/3, Phi-3 and Mistral against transformers, on tiny random checkpoints written by transformers.

Each model is a 2-layer, 64-wide Hugging Face folder with the tests' trained byte-level tokenizer; sliding windows
are 8 tokens, so the prompts (~20 tokens) and generations cross them, and Gemma's two layers are one sliding and
one global (Gemma 3's with their own rope bases).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import _train_tokenizer  # noqa: E402
from lamina_inference_torch.engine import Engine  # noqa: E402
from lamina_inference_torch.model import Decoder  # noqa: E402
from lamina_inference_torch.sampling import SamplingParams  # noqa: E402
from lamina_inference_torch.tokenizer import load_tokenizer  # noqa: E402
from lamina_inference_torch.weights import UnsupportedArchitecture, load_model  # noqa: E402
from test_decoder import PROMPTS, run_engine  # noqa: E402

COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
)
WINDOW = 8
ARCHITECTURES = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen2-sliding": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
    ),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"tie_word_embeddings": True}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"sliding_window": WINDOW, "query_pre_attn_scalar": 24}),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {
            "sliding_window": WINDOW,
            "layer_types": ["sliding_attention", "full_attention"],
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            },
        },
    ),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"sliding_window": WINDOW, "head_dim": None}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": WINDOW}),
}


def make_checkpoint(folder, config_class: str, model_class: str, options: dict):
    folder.mkdir(parents=True)
    tokenizer = _train_tokenizer(folder)
    settings = {**COMMON, **options}
    settings = {k: v for k, v in settings.items() if v is not None}
    eos = tokenizer.token_to_id("<|im_end|>")
    config = getattr(transformers, config_class)(
        vocab_size=tokenizer.get_vocab_size(), eos_token_id=eos, bos_token_id=eos, pad_token_id=0, **settings
    )
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(-0.2, 0.2) if config.model_type.startswith("gemma") else parameter.uniform_(0.8, 1.2)
            else:
                parameter.normal_(0, 0.3 if "embed" in name or "lm_head" in name else 0.15)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def checkpoint(request, tmp_path_factory):
    config_class, model_class, options = ARCHITECTURES[request.param]
    folder = tmp_path_factory.mktemp(request.param) / f"tiny-{request.param}"
    return folder, make_checkpoint(folder, config_class, model_class, options)


def test_logits_and_greedy_generation_match_transformers(checkpoint):
    folder, reference = checkpoint
    loaded = load_model(folder)
    assert loaded.config.architecture == reference.config.model_type
    tokenizer = load_tokenizer(folder, None)
    decoder = Decoder.from_weights(loaded.config, loaded.weights, max_batch=4, context_length=256)
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    assert max(len(p) for p in prompts) > WINDOW
    for ids in prompts:
        with torch.no_grad():
            expected = reference(torch.tensor([ids])).logits[0]
        torch.testing.assert_close(decoder.prefill(0, ids, all_logits=True), expected, atol=1e-4, rtol=0)
    # Chunked prefill and a batched decode step (rows at different positions) agree with the full prefill.
    ids = prompts[3]
    full = decoder.prefill(0, ids, all_logits=True)
    decoder.prefill(1, ids[:5])
    torch.testing.assert_close(decoder.prefill(1, ids[5:-1], start=5), full[-2], atol=1e-4, rtol=0)
    stepped = decoder.decode(torch.tensor([ids[0], ids[-1]]), torch.tensor([0, len(ids) - 1]))
    torch.testing.assert_close(stepped[1], full[-1], atol=1e-4, rtol=0)
    # Greedy generation through the engine, two prompts batched, token for token.
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


def test_unsupported_architecture_is_named(tmp_path):
    folder = tmp_path / "tiny-gpt2"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(UnsupportedArchitecture) as raised:
        load_model(folder)
    message = str(raised.value)
    assert "'gpt2'" in message and "GPT2LMHeadModel" in message and "qwen3" in message and "gemma2" in message
