"""The Files API's wire models (OpenAI's)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from lamina.access import Owner
from lamina.errors import LaminaError
from lamina.specs import ProviderConfig

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileRecord(BaseModel):
    """What the files registry keeps per file: the OpenAI object, and `order`, its place in listings (creation
    time in nanoseconds, zero-padded, so that files made within one second keep their upload order)."""

    file: FileObject
    order: str
    owner: Owner | None = None  # who uploaded it (lamina.auth); None: uploaded while auth was off


class FilesConfig(ProviderConfig):
    """`apis.files`: settings of the Files API itself (the bytes' provider has its own)."""

    sweep_seconds: float = Field(
        600,
        gt=0,
        description="how often expired files and bytes a crash left without metadata are deleted",
    )


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(ge=3600, le=2592000)  # OpenAI: one hour to 30 days


class UploadForm(BaseModel):
    """The fields of an upload's multipart body (documented in /v1/openapi.json; the route streams them)."""

    file: bytes = Field(description="the file's bytes, with a filename")
    purpose: Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
    # Optional, never null: a form field is sent or left out.
    expires_after_anchor: Annotated[Literal["created_at"] | None, WithJsonSchema({"const": "created_at"})] = Field(
        None, alias="expires_after[anchor]"
    )
    expires_after_seconds: Annotated[
        int | None, WithJsonSchema({"type": "integer", "minimum": 3600, "maximum": 2592000})
    ] = Field(None, alias="expires_after[seconds]")


class ListQuery(BaseModel):
    after: str | None = None
    limit: int = Field(10000, ge=1, le=10000)
    order: Literal["asc", "desc"] = "desc"
    purpose: str | None = None


def too_large(limit: int) -> LaminaError:
    return LaminaError(
        f"file is larger than this server's upload limit of {limit} bytes", status=413, code="file_too_large"
    )
