"""The files router: it owns every file's metadata; the provider (the first configured) only keeps bytes.

Metadata is a `FileRecord` per file in a `Registry` over the stack's key-value store, read through on every
access, so that several servers sharing the storage agree on what exists. Order of writes: bytes, then metadata on
upload; metadata, then bytes on deletion; so a crash never leaves metadata without bytes. Bytes nobody names are
what a crash can leave: each upload and deletion is marked pending (`files-pending/<id>`) until it is done, and the
sweep finishes what a marker older than an hour names (deletes the bytes when no metadata names them). Bytes
without a marker are never deleted: a provider holding files the storage does not know (storage moved or restored
from an older backup) loses nothing.

Expiry: a file past its `expires_at` is never listed nor served. Its metadata and bytes are deleted lazily, by the
first request that meets it (a retrieve, a download, a listing), and by a sweep at start-up and every
`apis.files.sweep_seconds` (default ten minutes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

from pydantic import BaseModel

from lamina import auth
from lamina.apis.files.provider import FilesProvider, Upload
from lamina.apis.files.types import FileDeleted, FileList, FileObject, FileRecord, FilesConfig, ListQuery
from lamina.errors import LaminaError, not_found
from lamina.storage import KVStore, Registry

log = logging.getLogger("lamina")
PENDING_GRACE_SECONDS = 3600  # a younger marker may be an upload or deletion still under way, in any server


class Pending(BaseModel):
    """An upload or deletion under way since `since` (Unix time): its bytes may be without metadata."""

    id: str
    since: float


def files_registry(kv: KVStore) -> Registry[FileRecord]:
    return Registry(kv, "files/", FileRecord, key=lambda record: record.file.id)


def order_at(nanoseconds: int) -> str:
    """A listing position: files sort by the time they were made, in nanoseconds."""
    return f"{nanoseconds:020d}"


async def adopt(kv: KVStore, records: Iterable[FileRecord]) -> int:
    """Register files whose bytes a provider already holds (metadata migrated from an older layout); ids already
    registered are left alone, so adopting twice changes nothing. Returns how many were new."""
    registry = files_registry(kv)
    added = 0
    for record in records:
        if await registry.get(record.file.id) is None:
            await registry.put(record)
            added += 1
    return added


def _expired(file: FileObject, now: float) -> bool:
    return file.expires_at is not None and file.expires_at <= now


class FilesRouter:
    def __init__(self, config: FilesConfig, providers: dict[str, FilesProvider], kv: KVStore) -> None:
        self.config = config
        self.providers = providers
        self.registry = files_registry(kv)
        self.pending = Registry(kv, "files-pending/", Pending, key=lambda marker: marker.id)
        self._copies: Path | None = None  # temporary copies for file_path, made on first need
        self._sweeper: asyncio.Task[None] | None = None
        # Called with the id of each deleted file (vector stores drop its chunks); a failure is logged, and the
        # listener catches up at its next start.
        self.on_delete: list[Callable[[str], Awaitable[None]]] = []

    async def start(self) -> None:
        await self.sweep()
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._copies is not None:
            shutil.rmtree(self._copies, ignore_errors=True)

    @property
    def provider(self) -> FilesProvider:
        if not self.providers:
            raise LaminaError("no files provider is configured", status=503, type="server_error")
        return next(iter(self.providers.values()))

    async def lookup(self, file_id: str, *, param: str = "file_id") -> FileRecord:
        """The one place a file is found by id: every route and every other API (vector stores) reaches a file
        through here, so this is where the caller's access is checked: a file it may not read does not exist
        for it."""
        record = await self.registry.get(file_id)
        if record is not None and _expired(record.file, time.time()):
            await self._remove(file_id)
            record = None
        if record is None or not auth.can("read", "file", file_id, record.owner):
            raise not_found(f"file '{file_id}' not found", param=param)
        return record

    async def get_file(self, file_id: str) -> FileObject:
        return (await self.lookup(file_id)).file

    async def upload(self, upload: Upload, *, filename: str, purpose: str, expires_after: int | None) -> FileObject:
        """Store a received upload under a new id and register it; `expires_after` is in seconds."""
        file_id = "file-" + secrets.token_hex(12)
        owner = auth.owner()
        try:
            auth.require("create", "file", file_id, owner)
        except LaminaError:
            upload.abort()
            raise
        await self.pending.put(Pending(id=file_id, since=time.time()))
        try:
            size = await self.provider.finish_upload(upload, file_id)
        except BaseException:
            upload.abort()
            raise
        now = time.time_ns()
        created_at = now // 1_000_000_000
        file = FileObject(
            id=file_id,
            bytes=size,
            created_at=created_at,
            filename=filename,
            purpose=purpose,
            expires_at=None if expires_after is None else created_at + expires_after,
        )
        await self.registry.put(FileRecord(file=file, order=order_at(now), owner=owner))
        await self.pending.delete(file_id)
        return file

    async def list_files(self, query: ListQuery) -> FileList:
        now = time.time()
        records = []
        for record in await self.registry.list():
            if _expired(record.file, now):
                await self._remove(record.file.id)
            elif (query.purpose is None or record.file.purpose == query.purpose) and auth.can(
                "read", "file", record.file.id, record.owner
            ):
                records.append(record)
        descending = query.order == "desc"
        records.sort(key=lambda r: (r.order, r.file.id), reverse=descending)
        if query.after is not None:
            cursor = await self.lookup(query.after, param="after")
            at = (cursor.order, cursor.file.id)
            records = [r for r in records if ((r.order, r.file.id) < at if descending else (r.order, r.file.id) > at)]
        files = [record.file for record in records[: query.limit]]
        return FileList(
            data=files,
            first_id=files[0].id if files else None,
            last_id=files[-1].id if files else None,
            has_more=len(records) > query.limit,
        )

    async def content(self, file_id: str) -> tuple[FileObject, AsyncIterator[bytes]]:
        """A file and its bytes, streamed. The first chunk is read here, so missing bytes are a 404 before any
        response starts."""
        file = await self.get_file(file_id)
        chunks = self.provider.read(file.id)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = b""
        except FileNotFoundError:
            raise not_found(f"file '{file.id}' has no content", param="file_id") from None
        return file, _prepend(first, chunks)

    async def file_path(self, file_id: str) -> Path:
        """A path on local disk to read the file's bytes from (404 for an unknown file).

        The provider's own file when it has one (`local_path`); otherwise a temporary copy, made once per server
        process, that lives until the file is deleted (or expires) through this server, or the server stops.
        """
        file = await self.get_file(file_id)
        local_path = getattr(self.provider, "local_path", None)
        if local_path is not None:
            path: Path | None = local_path(file.id)
            if path is not None:
                if not path.exists():
                    raise not_found(f"file '{file.id}' has no content", param="file_id")
                return path
        if self._copies is None:
            self._copies = Path(tempfile.mkdtemp(prefix="lamina-files-"))
        copy = self._copies / file.id
        if copy.exists():
            return copy
        _, chunks = await self.content(file.id)
        part = copy.with_name(f"{file.id}.{secrets.token_hex(4)}.part")
        try:
            with part.open("wb") as out:
                async for chunk in chunks:
                    await asyncio.to_thread(out.write, chunk)
            os.replace(part, copy)
        finally:
            part.unlink(missing_ok=True)
        return copy

    async def delete_file(self, file_id: str) -> FileDeleted:
        record = await self.lookup(file_id)
        auth.require("delete", "file", file_id, record.owner)
        if not await self._remove(file_id):  # another deletion got there first
            raise not_found(f"file '{file_id}' not found", param="file_id")
        return FileDeleted(id=file_id)

    async def _remove(self, file_id: str) -> bool:
        """Delete a file; False when it was already gone. Concurrent calls (in any process) sharing the storage:
        exactly one gets True, because the metadata's deletion is one atomic statement."""
        # Metadata first: once it is gone no request finds the file; a crash before the bytes go leaves them with
        # the pending marker, and the sweep finishes the deletion.
        await self.pending.put(Pending(id=file_id, since=time.time()))
        removed = await self.registry.delete(file_id)
        if self._copies is not None:
            (self._copies / file_id).unlink(missing_ok=True)
        await self.provider.delete(file_id)
        await self.pending.delete(file_id)
        if removed:
            for listener in self.on_delete:
                try:
                    await listener(file_id)
                except Exception:
                    log.exception("files: telling a listener that %s was deleted failed", file_id)
        return removed

    async def sweep(self) -> None:
        """Delete expired files, and finish uploads and deletions a crash interrupted (see the module's doc)."""
        if not self.providers:
            return
        now = time.time()
        for record in await self.registry.list():
            if _expired(record.file, now):
                await self._remove(record.file.id)
        for marker in await self.pending.list():
            if marker.since > now - PENDING_GRACE_SECONDS:
                continue
            if await self.registry.get(marker.id) is None:
                log.info("files: deleting the bytes of %s, left without metadata by a crash", marker.id)
                await self.provider.delete(marker.id)
            await self.pending.delete(marker.id)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_seconds)
            try:
                await self.sweep()
            except Exception:
                log.exception(
                    "files: the sweep of expired files failed; it runs again in %ss", self.config.sweep_seconds
                )


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()  # a client that leaves mid-download closes the provider's reader (and its file) now
