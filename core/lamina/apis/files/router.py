"""The files router: one files provider serves the API (the first configured)."""

from __future__ import annotations

from pathlib import Path

from lamina.apis.files.provider import FilesProvider
from lamina.apis.files.types import FileList, FileObject, ListQuery
from lamina.errors import LaminaError


class FilesRouter:
    """One files provider serves the API (the first configured)."""

    def __init__(self, providers: dict[str, FilesProvider]) -> None:
        self.providers = providers

    @property
    def provider(self) -> FilesProvider:
        if not self.providers:
            raise LaminaError("no files provider is configured", status=503, type="server_error")
        return next(iter(self.providers.values()))

    async def get_file(self, file_id: str) -> FileObject:
        return await self.provider.get_file(file_id)

    async def file_path(self, file_id: str) -> Path:
        return await self.provider.file_path(file_id)

    async def list_files(self, query: ListQuery) -> FileList:
        files, has_more = await self.provider.list_files(
            after=query.after, limit=query.limit, order=query.order, purpose=query.purpose
        )
        return FileList(
            data=files,
            first_id=files[0].id if files else None,
            last_id=files[-1].id if files else None,
            has_more=has_more,
        )

    async def delete_file(self, file_id: str) -> None:
        await self.provider.delete_file(file_id)
