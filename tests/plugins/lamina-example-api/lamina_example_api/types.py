"""The notes API's wire models and its config (`apis.notes` in the run config)."""

from __future__ import annotations

import time
import uuid
from typing import Literal

import lamina
from pydantic import BaseModel, ConfigDict, Field


class NotesConfig(lamina.ProviderConfig):
    max_chars: int = Field(2000, ge=1)  # longer notes are a 400


class CreateNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    provider_id: str | None = None  # which tagger; default: the first configured


class Note(BaseModel):
    id: str = Field(default_factory=lambda: f"note-{uuid.uuid4().hex[:16]}")
    object: Literal["note"] = "note"
    created: int = Field(default_factory=lambda: int(time.time()))
    text: str
    tags: list[str]
    provider_id: str


class NoteList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Note]


class NoteDeleted(BaseModel):
    id: str
    object: Literal["note"] = "note"
    deleted: bool = True
