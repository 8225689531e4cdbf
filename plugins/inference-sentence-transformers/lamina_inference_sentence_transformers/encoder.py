"""The provider itself: loads sentence-transformers models and serves embeddings (imports torch)."""

from __future__ import annotations

import asyncio
import base64
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lamina.apis.inference.provider import embedding_response
from lamina.apis.inference.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelInfo
from lamina.errors import LaminaError, bad_request, not_found
from lamina.pulls import default_name, ensure_model, split_reference
from sentence_transformers import SentenceTransformer

from lamina_inference_sentence_transformers import SentenceTransformersConfig
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


class SentenceTransformersInference:
    def __init__(self, encoders: dict[str, Encoder], executor: ThreadPoolExecutor) -> None:
        self.encoders = encoders
        self._executor = executor

    async def list_models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                id=model_id,
                model_type="embedding",
                metadata={"embedding_dimension": encoder.dimension, "context_length": encoder.context_length},
            )
            for model_id, encoder in self.encoders.items()
        ]

    async def chat_completion(self, request: ChatCompletionRequest) -> dict[str, Any]:
        raise bad_request(f"'{request.model}' is an embedding model; use /v1/embeddings", param="model")

    async def completion(self, request: CompletionRequest) -> dict[str, Any]:
        raise bad_request(f"'{request.model}' is an embedding model; use /v1/embeddings", param="model")

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        encoder = self.encoders.get(request.model)
        if encoder is None:
            raise not_found(f"model '{request.model}' is not served here; known: {', '.join(self.encoders)}")
        if request.dimensions is not None and request.dimensions > encoder.dimension:
            raise bad_request(
                f"dimensions is {request.dimensions}, but '{request.model}' makes {encoder.dimension}-dimensional "
                "embeddings",
                param="dimensions",
                code="invalid_value",
            )
        texts = encoder.texts_of(request.input)
        results = await encoder.batcher.submit(texts)
        vectors = np.stack([vector for vector, _ in results])
        if request.dimensions is not None and request.dimensions < encoder.dimension:
            vectors = shorten(vectors, request.dimensions)
        tokens = sum(count for _, count in results)
        if request.encoding_format == "base64":
            # Straight from numpy: much cheaper than floats to Python and back, which the router would do.
            encoded = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in vectors]
            return embedding_response(request.model, encoded, tokens)  # type: ignore[arg-type]
        return embedding_response(request.model, vectors.tolist(), tokens)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def shorten(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Keep the first `dimensions` components and renormalise, as OpenAI does for its v3 models."""
    kept = vectors[:, :dimensions]
    norms = np.linalg.norm(kept, axis=1, keepdims=True)
    return kept / np.where(norms == 0, 1, norms)


def model_id(name: str) -> str:
    """The id a configured model is served under: a catalogue or pulled name as is, a path's last segment."""
    if split_reference(name):
        return default_name(name)
    return Path(name).expanduser().name or name


def load_model(path: Path, device: str) -> SentenceTransformer:
    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as exc:
        raise LaminaError(f"cannot load {path} as a sentence-transformers model: {type(exc).__name__}: {exc}") from None


async def load_provider(config: SentenceTransformersConfig) -> SentenceTransformersInference:
    if config.threads:
        torch.set_num_threads(config.threads)
    # One worker thread for all models: torch already spreads each forward pass over the CPU's cores.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentence-transformers")
    encoders: dict[str, Encoder] = {}
    for name in config.models:
        served_as = model_id(name)
        if served_as in encoders:
            raise LaminaError(f"two configured models would both be served as '{served_as}'; rename one folder")
        path = await ensure_model(name)
        model = await asyncio.get_running_loop().run_in_executor(executor, load_model, path, config.device)
        encoders[served_as] = Encoder(model, config.batch_size, executor)
        log.info("loaded %s from %s (%d dimensions)", served_as, path, encoders[served_as].dimension)
    return SentenceTransformersInference(encoders, executor)
