"""The `inline::torch` provider's configuration (no torch here: core validates configs without loading engines)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lamina
from pydantic import Field, field_validator


class TorchConfig(lamina.ProviderConfig):
    models: list[str] = Field(
        min_length=1, description="Catalogue names (pulled on first use) or paths to .gguf files / HF model folders"
    )
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Activation and KV-cache dtype")
    # int8 measured ~3x faster decode than float32 weights on SmolLM2 with 97% top-1 agreement (KL 0.009).
    # int4 is GGUF's Q4_1 layout (32-weight blocks, scale + offset) and holds Q4_0/Q4_1 weights exactly; its compiled
    # kernel rounds activations to int8 per block as llama.cpp does (SmolLM2 Q4_1: 95.3% top-1, KL 0.0036 against
    # float32) and decodes a single stream ~2x faster than ATen's int4 kernel. On full-precision weights it rounds
    # more than int8 does. Hence 'auto'.
    quantize: Literal["auto", "none", "int8", "int4"] = Field(
        "auto",
        description="Linear layers: 'none' keeps weights in `dtype`; 'int8' is weight-only int8 per channel; "
        "'int4' is 4-bit in blocks of 32 with a scale and offset each, as GGUF's Q4_1 (best for Q4_0/Q4_1 GGUFs; "
        "the LM head is 8-bit in blocks of 32, as Q8_0); "
        "'auto': int4 for GGUFs stored as Q4_0/Q4_1, int8 for anything else",
    )
    fp16_above_rows: int | Literal["auto"] | None = Field(
        "auto",
        description="With quantize int8/int4: decode batches of more than this many rows, and prefill, use a float16 "
        "copy of the weights (2 more bytes per weight in memory; a sequence's logits then differ slightly with the "
        "batch size). 'auto': 16 for int4 on the compiled kernels, 4 otherwise (where each kernel stops beating "
        "the copy); null: int8 only (int4 always keeps the copy, for prefill)",
    )

    @field_validator("fp16_above_rows")
    @classmethod
    def _not_negative(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0 or more, 'auto' or null")
        return value

    # Small models ramble at OpenAI's default temperature of 1; like vLLM and Ollama, use the model's
    # recommended sampling when a request names none (SmolLM2's card: temperature 0.2, top_p 0.9).
    default_temperature: float = Field(0.2, ge=0, le=2, description="temperature when a request gives none")
    default_top_p: float = Field(0.9, gt=0, le=1, description="top_p when a request gives none")
    threads: int | None = Field(None, ge=1, description="Torch intra-op threads for the engine; default: all cores")
    max_batch: int = Field(8, ge=1, le=256, description="KV-cache slots: sequences decoded together per step")
    context_length: int | None = Field(
        4096, ge=16, description="Cap on the model's context (a slot's KV grows up to it, as used); null: the model's"
    )
    weight_cache: bool | Path = Field(
        True,
        description="Keep the converted weights (and tokenizer), so later starts read them instead of reading and "
        "converting the model again: true, in the provider's data folder; a path, in that folder (run configs and "
        "test servers can share one); false, not at all",
    )
    prefill_chunk: int = Field(
        256, ge=16, description="Prompt tokens per prefill step, so long prompts don't stall streams"
    )
    # A 1,000-token shared prefix costs SmolLM2-135M ~23 MB with quantized weights (float16 KV: 2 x 30 layers x 3
    # KV heads x 64 x 2 bytes per token; twice that at quantize none); reusing it cuts time to first token from ~1 s
    # to a few tens of ms on 2 cores.
    prefix_cache_mb: int = Field(
        256,
        ge=0,
        description="Memory for the KV of prompt prefixes seen before (system prompts, tools, earlier turns), "
        "reused by later requests; least recently used blocks are evicted first. 0: off",
    )
