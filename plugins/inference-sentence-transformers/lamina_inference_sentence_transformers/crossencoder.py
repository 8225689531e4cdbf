"""Provider `inline::cross-encoder` of the rerank API: sentence-transformers CrossEncoder models, in this process.

Models load on first use, in the provider's one worker thread (which also runs every prediction: torch already
spreads a forward pass over the cores); a model that cannot load is a 503 naming the provider.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lamina.errors import LaminaError, UpstreamError
from lamina.pulls import ensure_model

from lamina_inference_sentence_transformers import CrossEncoderConfig
from lamina_inference_sentence_transformers.provider import model_id


class CrossEncoderReranker:
    def __init__(self, config: CrossEncoderConfig, provider_id: str) -> None:
        self.config = config
        self.provider_id = provider_id
        self.names = {model_id(name): name for name in config.models}  # served id -> configured name
        self.models = list(self.names)
        self.loaded: dict[str, Any] = {}
        self.lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cross-encoder")

    async def _model(self, served_as: str) -> Any:
        async with self.lock:
            if served_as not in self.loaded:
                try:
                    path = await ensure_model(self.names[served_as])
                    self.loaded[served_as] = await asyncio.get_running_loop().run_in_executor(
                        self._executor, _load, str(path), self.config.device
                    )
                except Exception as exc:
                    cause = exc.message if isinstance(exc, LaminaError) else f"{type(exc).__name__}: {exc}"
                    raise UpstreamError(
                        self.provider_id, f"could not load reranker model '{served_as}' ({cause})", status=503
                    ) from None
            return self.loaded[served_as]

    async def rerank(self, model: str, query: str, items: list[str], top_n: int | None) -> list[tuple[int, float]]:
        encoder = await self._model(model)
        scores = await asyncio.get_running_loop().run_in_executor(
            self._executor, _predict, encoder, query, items, self.config.batch_size
        )
        ranked = sorted(enumerate(scores), key=lambda pair: -pair[1])
        return ranked if top_n is None else ranked[:top_n]

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _load(path: str, device: str) -> Any:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(path, device=device)


def _predict(encoder: Any, query: str, items: list[str], batch_size: int) -> list[float]:
    # A one-label model's logits go through a sigmoid (CrossEncoder's default for num_labels=1): scores in (0, 1).
    scores = encoder.predict([(query, item) for item in items], batch_size=batch_size, show_progress_bar=False)
    return [float(score) for score in scores]
