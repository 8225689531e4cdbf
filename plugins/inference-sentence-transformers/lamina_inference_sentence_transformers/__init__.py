"""Lamina inference provider `inline::sentence-transformers`: embeddings from sentence-transformers models.

This entry-point module stays light: torch and sentence_transformers are imported by the provider's loading
thread only, after `create` has returned.
"""

from __future__ import annotations

from typing import Any

import lamina
from lamina.hookspecs import hookimpl
from lamina.specs import Deps, ProviderSpec
from pydantic import Field


class SentenceTransformersConfig(lamina.ProviderConfig):
    models: list[str] = Field(
        min_length=1,
        description="Catalogue names (pulled on first use), pulled model names, `hf:`/`pypi:` references or "
        "folder paths of sentence-transformers models; each is served under its last path segment",
    )
    device: str = Field("cpu", description="torch device, e.g. cpu, cuda, cuda:1, mps")
    batch_size: int = Field(32, ge=1, le=4096, description="texts per forward pass")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's own choice")


class CrossEncoderConfig(lamina.ProviderConfig):
    models: list[str] = Field(
        min_length=1,
        description="Catalogue names, pulled model names, `hf:`/`pypi:` references or folder paths of "
        "sentence-transformers CrossEncoder models (e.g. BAAI/bge-reranker-base); each is served under its last "
        "path segment",
    )
    device: str = Field("cpu", description="torch device, e.g. cpu, cuda, cuda:1, mps")
    batch_size: int = Field(32, ge=1, le=4096, description="query-item pairs per forward pass")


async def create_cross_encoder(config: CrossEncoderConfig, deps: Deps) -> Any:
    from lamina_inference_sentence_transformers.crossencoder import CrossEncoderReranker

    return CrossEncoderReranker(config, deps.provider_id)


async def create(config: SentenceTransformersConfig, deps: Deps) -> Any:
    from lamina_inference_sentence_transformers.provider import SentenceTransformersInference

    return SentenceTransformersInference(config, deps.provider_id)


@hookimpl
def register_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            api="inference",
            type="inline::sentence-transformers",
            config=SentenceTransformersConfig,
            create=create,
            description="Embeddings from sentence-transformers models, run in this process (CPU or GPU)",
        ),
        ProviderSpec(
            api="rerank",
            type="inline::cross-encoder",
            config=CrossEncoderConfig,
            create=create_cross_encoder,
            description="Reranking with sentence-transformers CrossEncoder models, run in this process",
        ),
    ]
