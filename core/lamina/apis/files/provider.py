"""What a files provider implements: where uploaded bytes and their metadata are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from lamina.apis.files.types import FileObject


class Upload(Protocol):
    """A file being received: bytes go straight to the provider's storage."""

    size: int

    def write(self, data: bytes) -> None: ...  # raises the 413 from `too_large` past the limit

    def abort(self) -> None: ...


class FilesProvider(Protocol):
    max_upload_bytes: int

    async def begin_upload(self) -> Upload: ...

    async def finish_upload(
        self, upload: Upload, *, filename: str, purpose: str, expires_at: int | None
    ) -> FileObject: ...

    async def list_files(
        self, *, after: str | None, limit: int, order: str, purpose: str | None
    ) -> tuple[list[FileObject], bool]: ...

    async def get_file(self, file_id: str) -> FileObject: ...  # raises 404

    async def file_path(self, file_id: str) -> Path: ...

    async def delete_file(self, file_id: str) -> None: ...  # raises 404
