"""The rerank API's wire models (Llama Stack's `/v1alpha/inference/rerank`) and its config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lamina.specs import ProviderConfig


class TextPart(BaseModel):
    """An OpenAI text content part: Llama Stack accepts one wherever it accepts a string."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    query: str | TextPart
    items: list[str | TextPart] = Field(min_length=1, max_length=1000)
    max_num_results: int | None = Field(None, ge=1)


class RerankResult(BaseModel):
    index: int  # the item's position in the request's `items`
    relevance_score: float  # higher is more relevant


class RerankResponse(BaseModel):
    data: list[RerankResult]


class RerankConfig(ProviderConfig):
    """`apis.rerank`: names for reranker models, each `<provider_id>/<model>` of a configured rerank provider."""

    models: dict[str, str] = Field(
        default_factory=dict,
        description="alias -> '<provider_id>/<model>', e.g. {reranker: vllm/BAAI/bge-reranker-base}",
    )
