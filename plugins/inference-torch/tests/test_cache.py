"""The converted-weight cache: what it serves equals a fresh conversion; stale or damaged files are rebuilt."""

from __future__ import annotations

import logging
import os
import shutil

import pytest

torch = pytest.importorskip("torch")

from lamina_inference_torch import cache  # noqa: E402
from lamina_inference_torch.config import TorchConfig  # noqa: E402
from lamina_inference_torch.provider import load_served_model  # noqa: E402
from lamina_inference_torch.sampling import SamplingParams  # noqa: E402
from test_decoder import PROMPTS, run_engine  # noqa: E402

# fp16_above_rows=0: prefill and decode both run on the float16 copies, which the cache must rebuild exactly.
SETTINGS = [("int8", 0), ("int8", None), ("int4", None), ("none", None)]


def served(path, cache_dir, quantize, fp16_above_rows):
    config = TorchConfig(
        models=[str(path)],
        quantize=quantize,
        fp16_above_rows=fp16_above_rows,
        context_length=128,
        max_batch=2,
        threads=1,
        prefill_chunk=16,
    )
    return load_served_model(path, config, cache_dir)


def outputs(model) -> tuple[list[torch.Tensor], list[list[int]]]:
    """Prefill logits of every prompt, and 12 greedy tokens for each."""
    prompts = [model.tokenizer.encode(p) for p in PROMPTS]
    try:
        greedy = [run_engine(model.engine, [ids], [SamplingParams(temperature=0)], 12)[0]["tokens"] for ids in prompts]
    finally:
        model.engine.close()
    # Only once the engine's thread is gone (it packs weights in the background): torch's fp16 kernels must not
    # run while another thread packs.
    logits = [model.engine.decoder.prefill(0, ids, all_logits=True) for ids in prompts]
    return logits, greedy


@pytest.mark.parametrize(("quantize", "fp16_above_rows"), SETTINGS, ids=[f"{q}-{r}" for q, r in SETTINGS])
@pytest.mark.parametrize("fmt", ["gguf", "hf"])
def test_cached_model_computes_what_a_fresh_conversion_does(tiny, tmp_path, caplog, fmt, quantize, fp16_above_rows):
    path = tiny.gguf_file if fmt == "gguf" else tiny.hf_folder
    caplog.set_level(logging.INFO, "lamina.torch")
    fresh_logits, fresh_tokens = outputs(served(path, None, quantize, fp16_above_rows))
    written_logits, written_tokens = outputs(served(path, tmp_path, quantize, fp16_above_rows))
    assert "converting" in caplog.text and len(list(tmp_path.glob("*/*.safetensors"))) == 1
    caplog.clear()
    cached = served(path, tmp_path, quantize, fp16_above_rows)
    assert "read converted weights" in caplog.text and "converting" not in caplog.text
    assert [cached.tokenizer.encode(p) for p in PROMPTS] == [cached.tokenizer.encode(p) for p in PROMPTS]
    cached_logits, cached_tokens = outputs(cached)
    assert cached_tokens == written_tokens == fresh_tokens
    assert any(len(tokens) > 3 for tokens in fresh_tokens)
    for fresh, written, mapped in zip(fresh_logits, written_logits, cached_logits, strict=True):
        torch.testing.assert_close(mapped, fresh, atol=1e-5, rtol=0)
        assert torch.equal(mapped, written)


def test_damaged_or_stale_cache_is_rebuilt_never_used(tiny, tmp_path, caplog):
    source = tmp_path / "model" / tiny.gguf_file.name
    source.parent.mkdir()
    shutil.copy(tiny.gguf_file, source)
    cache_dir = tmp_path / "converted"
    reference = outputs(served(source, cache_dir, "int8", 0))
    [file] = cache_dir.glob("*/*.safetensors")
    settings = {"quantize": "int8", "dtype": "float32", "fp16_copy": True}
    assert cache.load(file, cache.cache_key(source, settings)) is not None

    def damage(how) -> None:
        data = bytearray(file.read_bytes())
        how(data)
        file.write_bytes(bytes(data))
        caplog.clear()
        assert cache.load(file, cache.cache_key(source, settings)) is None
        assert "damaged" in caplog.text
        rebuilt = served(source, cache_dir, "int8", 0)  # converts again and rewrites the file
        assert "damaged" in caplog.text and "wrote" in caplog.text
        logits, tokens = outputs(rebuilt)
        assert tokens == reference[1] and all(torch.equal(a, b) for a, b in zip(logits, reference[0], strict=True))
        assert cache.load(file, cache.cache_key(source, settings)) is not None

    caplog.set_level(logging.INFO, "lamina.torch")

    def flip_a_weight_byte(data: bytearray) -> None:
        data[len(data) // 2] ^= 0x40

    damage(flip_a_weight_byte)
    damage(lambda data: data.__delitem__(slice(len(data) - 100, None)))  # truncated
    damage(lambda data: data.__setitem__(slice(8, 40), b"\0" * 32))  # header garbage
    # The source changes (same size, new content and mtime): the cache is stale and rebuilt from the new file.
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    caplog.clear()
    assert cache.load(file, cache.cache_key(source, settings)) is None and "stale" in caplog.text
    outputs(served(source, cache_dir, "int8", 0))
    assert cache.load(file, cache.cache_key(source, settings)) is not None
    # Other settings get a file of their own, which replaces this model's file for the old settings.
    outputs(served(source, cache_dir, "int8", None))
    assert [f.name for f in file.parent.iterdir()] == ["int8-float32.safetensors"]
