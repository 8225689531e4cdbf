"""What the router keeps in the stack's storage (through `lamina.storage.Registry`): store, file and batch records.

Keys are those of the previous (in-memory) version, `vector_stores/<store>`, `vector_store_files/<store>/<file>`
and `vector_store_file_batches/<store>/<batch>`, and the old underscore names (`_provider_id`, `_order`,
`_file_ids`) are still read, so existing data directories keep working.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from lamina.access import Owner
from lamina.apis.vector_io.types import StoreExpiresAfter

Status = Literal["in_progress", "completed", "failed", "cancelled"]


def _old(name: str) -> Any:
    return Field(validation_alias=AliasChoices(name, "_" + name))


class _Record(BaseModel):
    # Records of the previous version also stored derived fields (counts, status); they are recomputed.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class StoreRecord(_Record):
    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str = ""
    description: str | None = None
    expires_after: StoreExpiresAfter | None = None
    last_active_at: int
    metadata: dict[str, str] = {}
    embedding_model: str
    provider_id: str = _old("provider_id")
    order: int = _old("order")
    # The provider's chunks carry their files' attributes. Stores of the previous version kept attributes only
    # here; the router hands them to the provider once, at start.
    chunk_attributes: bool = False
    owner: Owner | None = None  # who made it (lamina.auth); None: made while auth was off

    def expires_at(self, last_active_at: int) -> int | None:
        return last_active_at + self.expires_after.days * 86400 if self.expires_after else None


class FileRecord(_Record):
    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    usage_bytes: int = 0
    created_at: int
    vector_store_id: str
    status: Status
    last_error: dict[str, str] | None = None
    chunking_strategy: dict[str, Any]
    attributes: dict[str, Any] = {}
    order: int = _old("order")

    def view(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"order"})


class BatchRecord(_Record):
    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "cancelled"] = "in_progress"  # what is asked; the view derives the rest
    file_ids: list[str] = _old("file_ids")
    order: int = _old("order")
