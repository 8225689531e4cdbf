"""Our decoder against transformers' LlamaForCausalLM on tiny random Llamas, from both file formats."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lamina_inference_torch.engine import Engine, Finished, Sequence, TextDelta  # noqa: E402
from lamina_inference_torch.model import Decoder  # noqa: E402
from lamina_inference_torch.sampling import SamplingParams  # noqa: E402
from lamina_inference_torch.tokenizer import load_tokenizer  # noqa: E402
from lamina_inference_torch.weights import load_model  # noqa: E402

PROMPTS = [
    "The quick brown fox",
    "Paris is the capital of",
    "def add(a, b):\n    return",
    "Lamina serves models with continuous batching; café, naïve, 日本語 and numbers",
]


def decoder_for(path, max_batch: int = 4) -> Decoder:
    loaded = load_model(path)
    return Decoder.from_weights(
        loaded.config, loaded.weights, dtype=torch.float32, max_batch=max_batch, context_length=256
    )


def reference_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_logits_match_transformers(tiny, fmt):
    path = tiny.hf_folder if fmt == "hf" else tiny.gguf_file
    tokenizer = load_tokenizer(path, load_model(path).gguf_metadata)
    decoder = decoder_for(path)
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        ours = decoder.prefill(0, ids, all_logits=True)
        torch.testing.assert_close(ours, reference_logits(tiny.reference, ids), atol=1e-4, rtol=0)


def test_llama3_rope_scaling_and_tied_embeddings(tiny_llama3_rope):
    ids = list(range(3, 120))  # longer than original_max_position_embeddings, so scaling matters
    for path in (tiny_llama3_rope.hf_folder, tiny_llama3_rope.gguf_file):
        ours = decoder_for(path).prefill(0, ids, all_logits=True)
        torch.testing.assert_close(ours, reference_logits(tiny_llama3_rope.reference, ids), atol=1e-4, rtol=0)


def test_gguf_tokenizer_matches_tokenizer_json(tiny):
    from_json = load_tokenizer(tiny.hf_folder, None)
    from_gguf = load_tokenizer(tiny.gguf_file, load_model(tiny.gguf_file).gguf_metadata)
    chat = [{"role": "user", "content": "café 日本語 🎉"}]
    text = from_json.render_chat(chat, None)
    assert text == from_gguf.render_chat(chat, None)
    for sample in [*PROMPTS, text]:
        assert from_gguf.encode(sample) == from_json.encode(sample)
    assert from_gguf.stop_token_ids == from_json.stop_token_ids


def test_chunked_prefill_and_decode_match_full_prefill(tiny):
    decoder = decoder_for(tiny.hf_folder)
    ids = load_tokenizer(tiny.hf_folder, None).encode(PROMPTS[3])
    full = decoder.prefill(0, ids, all_logits=True)
    decoder.prefill(1, ids[:5])
    chunked = decoder.prefill(1, ids[5:-1], start=5)
    torch.testing.assert_close(chunked, full[-2], atol=1e-4, rtol=0)
    stepped = decoder.decode(torch.tensor([ids[0], ids[-1]]), torch.tensor([0, len(ids) - 1]))
    torch.testing.assert_close(stepped[1], full[-1], atol=1e-4, rtol=0)


def run_engine(
    engine: Engine, prompts: list[list[int]], params: list[SamplingParams], max_tokens: int = 24, timeout: float = 60
):
    """Submit all prompts at once (so they share decode steps); return each one's tokens and text."""
    results: list[dict] = [{"tokens": [], "text": "", "finish": None} for _ in prompts]

    def emitter(index):
        def emit(event):
            if isinstance(event, TextDelta):
                results[index]["tokens"] += [c.token for c in event.tokens]
                results[index]["text"] += event.text
            elif isinstance(event, Finished):
                results[index]["finish"] = event.reason
            else:
                results[index]["finish"] = event

        return emit

    sequences = [
        Sequence(p, sp, max_tokens, [], emitter(i)) for i, (p, sp) in enumerate(zip(prompts, params, strict=True))
    ]
    for sequence in sequences:
        engine.submit(sequence)
    import time

    deadline = time.time() + timeout
    while not all(s.done for s in sequences) and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.01)
    return results


@pytest.fixture(scope="module")
def tiny_engine(tiny):
    engine = Engine(decoder_for(tiny.gguf_file), load_tokenizer(tiny.hf_folder, None), threads=2, prefill_chunk=8)
    yield engine
    engine.close()


def test_greedy_generation_matches_transformers(tiny, tiny_engine):
    tokenizer = tiny_engine.tokenizer
    for prompt in PROMPTS[:2]:
        ids = tokenizer.encode(prompt)
        with torch.no_grad():
            expected = tiny.reference.generate(
                torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0
            )[0, len(ids) :].tolist()
        ours = run_engine(tiny_engine, [ids], [SamplingParams(temperature=0)])[0]
        stop_at = next((i for i, t in enumerate(expected) if t in tokenizer.stop_token_ids), None)
        assert ours["tokens"] == expected[: None if stop_at is None else stop_at + 1]


def test_batch_gives_each_prompt_what_it_gets_alone(tiny_engine):
    tokenizer = tiny_engine.tokenizer
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    greedy = SamplingParams(temperature=0)
    alone = [run_engine(tiny_engine, [p], [greedy])[0] for p in prompts]
    together = run_engine(tiny_engine, prompts, [greedy] * len(prompts))
    assert [r["tokens"] for r in together] == [r["tokens"] for r in alone]
    # Seeded sampling: the same seed gives the same tokens whatever else shares the batch.
    seeded = [SamplingParams(temperature=1.0, top_p=0.95, top_k=50, seed=7 + i) for i in range(len(prompts))]
    alone = [run_engine(tiny_engine, [p], [s])[0] for p, s in zip(prompts, seeded, strict=True)]
    together = run_engine(tiny_engine, prompts, seeded)
    assert [r["tokens"] for r in together] == [r["tokens"] for r in alone]


def test_stop_sequence_is_never_emitted(tiny_engine):
    tokenizer = tiny_engine.tokenizer
    ids = tokenizer.encode(PROMPTS[0])
    full = run_engine(tiny_engine, [ids], [SamplingParams(temperature=0)], max_tokens=30)[0]["text"]
    assert len(full) > 6
    stop = full[3:6]
    results = []
    sequence = Sequence(ids, SamplingParams(temperature=0), 30, [stop], results.append)
    tiny_engine.submit(sequence)
    import time

    while not sequence.done:
        time.sleep(0.005)
    time.sleep(0.01)
    text = "".join(e.text for e in results if isinstance(e, TextDelta))
    assert text == full[: full.index(stop)]
    assert results[-1].reason == "stop"


def test_the_kv_cache_holds_the_slots_and_positions_in_use(tiny):
    loaded = load_model(tiny.hf_folder)
    loaded.config.max_position = 1024  # rope works past the tiny model's 256; only the cache's growth is tested
    decoder = Decoder.from_weights(loaded.config, loaded.weights, max_batch=4, context_length=1024)
    tokens = [(i * 7) % 300 + 10 for i in range(600)]
    assert decoder.kv_shape == (0, 0)
    whole = decoder.prefill(0, tokens, all_logits=True)
    assert decoder.kv_shape == (1, 768)  # in multiples of 256 positions
    decoder.free_kv()
    assert decoder.kv_shape == (0, 0)
    # Grown one chunk at a time (doubling: slots 2 then 4, positions 512 then 1024), copying what it held.
    decoder.prefill(1, tokens[:100])
    assert decoder.kv_shape == (2, 256)
    decoder.write_kv(0, 0, decoder.read_kv(1, 0, 100))  # outside inference mode, as the prefix cache does
    parts = [decoder.prefill(2, tokens[s : s + 200], start=s, all_logits=True) for s in range(0, 600, 200)]
    assert decoder.kv_shape == (4, 1024)
    torch.testing.assert_close(torch.cat(parts), whole, atol=1e-4, rtol=1e-4)
    decode = decoder.decode(torch.tensor([0, tokens[100], 0]), torch.tensor([0, 100, 0]))
    torch.testing.assert_close(decode[1], decoder.prefill(3, tokens[:101]), atol=1e-4, rtol=1e-4)
