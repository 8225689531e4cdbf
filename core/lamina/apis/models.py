"""Models: what each inference provider serves (discovered at start-up) plus aliases users register."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    """A model as `/v1/models` shows it: OpenAI's fields, then where requests for it go."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = ""
    provider_id: str
    provider_model_id: str
    model_type: Literal["llm", "embedding"] = "llm"
    metadata: dict[str, Any] = {}
    source: Literal["discovered", "registered", "config", "unlisted"] = "discovered"


class RegisterModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, pattern=r"^[^\s]+$")
    provider_id: str
    provider_model_id: str | None = None
    model_type: Literal["llm", "embedding"] = "llm"
    metadata: dict[str, Any] = {}


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool
