"""The file processors API's wire models (Llama Stack's `/v1alpha/file-processors/process`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lamina.apis.vector_io.types import ChunkingStrategy


class ProcessRequest(BaseModel):
    """The JSON form: a file already uploaded through the Files API. (The multipart form sends a `file` part
    and an optional `chunking_strategy` field holding this JSON.)"""

    model_config = ConfigDict(extra="forbid")

    file_id: str = Field(min_length=1)
    chunking_strategy: ChunkingStrategy | None = None


class ProcessedChunk(BaseModel):
    content: str
    chunk_id: str
    metadata: dict[str, Any]


class ProcessResponse(BaseModel):
    chunks: list[ProcessedChunk]
    metadata: dict[str, Any]
