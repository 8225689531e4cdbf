"""The heavy half of the provider: one loaded sentence-transformers model and its embeddings (imports torch and
sentence_transformers, seconds on a small CPU, which is why only the loading thread imports this module)."""

from __future__ import annotations

import base64
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lamina.apis.inference.provider import embedding_response
from lamina.apis.inference.types import EmbeddingRequest
from lamina.errors import LaminaError, bad_request
from sentence_transformers import SentenceTransformer

from lamina_inference_sentence_transformers.batching import Batcher

log = logging.getLogger("lamina.sentence_transformers")

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
MERGE_FACTOR = 4  # a merged batch holds at most this many forward passes' worth of texts


class Encoder:
    """One loaded model: turns texts into (vector, token count) pairs, batched across requests."""

    def __init__(self, model: SentenceTransformer, batch_size: int, executor: ThreadPoolExecutor) -> None:
        self.model = model
        self.batch_size = batch_size
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension: int = dimension()
        self.context_length: int = model.max_seq_length
        self.batcher: Batcher[str, tuple[np.ndarray, int]] = Batcher(self.encode, executor, batch_size * MERGE_FACTOR)

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        if request.dimensions is not None and request.dimensions > self.dimension:
            raise bad_request(
                f"dimensions is {request.dimensions}, but '{request.model}' makes {self.dimension}-dimensional "
                "embeddings",
                param="dimensions",
                code="invalid_value",
            )
        texts = self.texts_of(request.input)
        results = await self.batcher.submit(texts)
        vectors = np.stack([vector for vector, _ in results])
        if request.dimensions is not None and request.dimensions < self.dimension:
            vectors = shorten(vectors, request.dimensions)
        tokens = sum(count for _, count in results)
        if request.encoding_format == "base64":
            # Straight from numpy: much cheaper than floats to Python and back, which the router would do.
            encoded = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in vectors]
            return embedding_response(request.model, encoded, tokens)  # type: ignore[arg-type]
        return embedding_response(request.model, vectors.tolist(), tokens)

    def encode(self, texts: list[str]) -> list[tuple[np.ndarray, int]]:
        """Runs in the worker thread."""
        vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return list(zip(vectors, self.count_tokens(texts), strict=True))

    def count_tokens(self, texts: list[str]) -> list[int]:
        ids = self.model.tokenizer(
            texts,
            truncation=True,
            max_length=self.context_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        return [len(row) for row in ids]

    def texts_of(self, raw: str | list[str] | list[int] | list[list[int]]) -> list[str]:
        """The request's inputs as texts; token ids are the model's own tokenizer's, decoded back to text."""
        if isinstance(raw, str):
            raw = [raw]
        if not raw:
            raise bad_request("input must not be empty", param="input", code="invalid_value")
        if len(raw) > MAX_INPUTS:
            raise bad_request(f"input has {len(raw)} items; at most {MAX_INPUTS} per request", param="input")
        if isinstance(raw[0], int):
            raw = [raw]  # type: ignore[list-item]  # one input given as token ids
        texts = []
        for i, item in enumerate(raw):
            if isinstance(item, list):
                item = self.decode(item, i)
            if not item:
                raise bad_request(f"input[{i}] is empty; every input needs some text", param="input")
            texts.append(item)
        return texts

    def decode(self, ids: list[int], index: int) -> str:
        vocabulary = len(self.model.tokenizer)
        if not ids or any(not 0 <= token < vocabulary for token in ids):
            raise bad_request(f"input[{index}]: token ids must be in [0, {vocabulary})", param="input")
        return self.model.tokenizer.decode(ids, skip_special_tokens=True)


def shorten(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Keep the first `dimensions` components and renormalise, as OpenAI does for its v3 models."""
    kept = vectors[:, :dimensions]
    norms = np.linalg.norm(kept, axis=1, keepdims=True)
    return kept / np.where(norms == 0, 1, norms)


def load_model(path: Path, device: str) -> SentenceTransformer:
    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as exc:
        raise LaminaError(f"cannot load {path} as a sentence-transformers model: {type(exc).__name__}: {exc}") from None


def load_encoder(
    path: Path, device: str, batch_size: int, threads: int | None, executor: ThreadPoolExecutor
) -> Encoder:
    """Blocking: runs in the provider's worker thread."""
    if threads:
        torch.set_num_threads(threads)
    return Encoder(load_model(path, device), batch_size, executor)
