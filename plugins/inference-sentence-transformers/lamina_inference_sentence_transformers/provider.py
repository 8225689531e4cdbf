"""The provider as the server sees it: answers at once, while its worker thread imports sentence_transformers
(seconds: it pulls in transformers, scikit-learn and scipy) and loads the models, so the server, and the
providers that start after this one, need not wait for that. Requests wait for the load; a load that failed
answers every request with a 503 that says why."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.apis.inference.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelInfo
from lamina.cli import adopt_library_logging
from lamina.errors import LaminaError, UpstreamError, bad_request, not_found
from lamina.pulls import default_name, ensure_model, split_reference

from lamina_inference_sentence_transformers import SentenceTransformersConfig

if TYPE_CHECKING:
    from lamina_inference_sentence_transformers.encoder import Encoder

log = logging.getLogger("lamina.sentence_transformers")


class SentenceTransformersInference:
    def __init__(self, config: SentenceTransformersConfig, provider_id: str) -> None:
        self.provider_id = provider_id
        self.names: dict[str, str] = {}  # served id -> configured name
        for name in config.models:
            served_as = model_id(name)
            if served_as in self.names:
                raise LaminaError(f"two configured models would both be served as '{served_as}'; rename one folder")
            self.names[served_as] = name
        self.encoders: dict[str, Encoder] = {}
        self.failure: UpstreamError | None = None
        # One worker thread for loading and for all models: torch already spreads a forward pass over the cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentence-transformers")
        self._loading = asyncio.get_running_loop().create_task(self._load(config))

    async def _load(self, config: SentenceTransformersConfig) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            log.info("loading %s in the background", ", ".join(self.names))
            encoder = await loop.run_in_executor(
                self._executor, importlib.import_module, "lamina_inference_sentence_transformers.encoder"
            )
            log.info("imported sentence_transformers in %.1f s", time.perf_counter() - started)
            adopt_library_logging()  # the server did it for what was imported before it was ready: not this
            for served_as, name in self.names.items():
                loading = time.perf_counter()
                path = await ensure_model(name)
                self.encoders[served_as] = await loop.run_in_executor(
                    self._executor,
                    encoder.load_encoder,
                    path,
                    config.device,
                    config.batch_size,
                    config.threads,
                    self._executor,
                )
                log.info(
                    "loaded %s from %s in %.1f s (%d dimensions)",
                    served_as,
                    path,
                    time.perf_counter() - loading,
                    self.encoders[served_as].dimension,
                )
        except Exception as exc:
            cause = exc.message if isinstance(exc, LaminaError) else f"{type(exc).__name__}: {exc}"
            self.failure = UpstreamError(
                self.provider_id,
                f"could not load its embedding models ({cause}); fix the model or the provider's `models` in "
                "the run config, then restart the server",
                status=503,
                code="model_load_failed",
            )
            # Logged here, once; requests answer with the 503 without logging it again.
            log.error("%s", self.failure.message, exc_info=None if isinstance(exc, LaminaError) else exc)
            return
        log.info("ready in %.1f s", time.perf_counter() - started)

    async def _loaded(self) -> None:
        # Shielded: a client that goes away must not cancel the load the others wait for.
        await asyncio.shield(self._loading)
        if self.failure is not None:
            raise self.failure

    async def list_models(self) -> list[ModelInfo]:
        await self._loaded()
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
        if request.model not in self.names:
            raise not_found(f"model '{request.model}' is not served here; known: {', '.join(self.names)}")
        await self._loaded()
        return await self.encoders[request.model].embeddings(request)

    async def close(self) -> None:
        self._loading.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def model_id(name: str) -> str:
    """The id a configured model is served under: a catalogue or pulled name as is, a path's last segment."""
    if split_reference(name):
        return default_name(name)
    return Path(name).expanduser().name or name
