"""Bytes of files on local disk, one file per id under `blobs/`. Uploads are written to `uploads/*.part` and
renamed into place only when complete, so an id never names half a file. Metadata is the files router's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from lamina.apis.files.router import adopt, order_at
from lamina.apis.files.types import FileObject, FileRecord, too_large
from lamina.storage import KVStore

log = logging.getLogger("lamina")
CHUNK = 256 * 1024
STALE_UPLOAD_SECONDS = 3600  # a .part untouched this long belongs to no live upload (another server's included)


class LocalUpload:
    """Bytes written to a `.part` file as they arrive; the limit is checked before each write."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self._file = open(path, "wb")  # noqa: SIM115 - closed in finish/abort

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.limit:
            raise too_large(self.limit)
        self._file.write(data)
        self.size += len(data)

    def finish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class LocalFiles:
    def __init__(self, root: Path, max_upload_bytes: int) -> None:
        self.blobs = root / "blobs"
        self.uploads = root / "uploads"
        self.max_upload_bytes = max_upload_bytes

    @classmethod
    async def open(cls, root: Path, max_upload_bytes: int, kv: KVStore) -> LocalFiles:
        files = cls(root, max_upload_bytes)
        files.blobs.mkdir(parents=True, exist_ok=True)
        files.uploads.mkdir(parents=True, exist_ok=True)
        # Other servers may share this folder: only uploads nobody has written to for long are crash leftovers.
        for part in files.uploads.iterdir():
            if part.stat().st_mtime < time.time() - STALE_UPLOAD_SECONDS:
                part.unlink(missing_ok=True)
        await import_legacy(root, kv)
        return files

    async def begin_upload(self) -> LocalUpload:
        return LocalUpload(self.uploads / f"{secrets.token_hex(16)}.part", self.max_upload_bytes)

    async def finish_upload(self, upload: LocalUpload, file_id: str) -> int:
        # fsync waits for the disk: in a thread, so other requests are served meanwhile.
        await asyncio.to_thread(upload.finish)
        await asyncio.to_thread(os.replace, upload.path, self.blobs / file_id)
        return upload.size

    async def read(self, file_id: str) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self.blobs / file_id, "rb") as blob:
            while chunk := await blob.read(CHUNK):
                yield chunk

    def local_path(self, file_id: str) -> Path:
        return self.blobs / file_id

    async def delete(self, file_id: str) -> None:
        (self.blobs / file_id).unlink(missing_ok=True)


async def import_legacy(root: Path, kv: KVStore) -> None:
    """Hand the metadata of the previous version's `files.db` (this provider's own SQLite database then) to the
    files router's registry, then rename the database to `files.db.imported` so it is never read again. Adopting
    skips ids already registered, so an import interrupted by a crash simply runs again at the next start."""
    database = root / "files.db"
    if not database.exists():
        return
    try:
        # mode=rw: a server sharing this folder may have imported and renamed it meanwhile; never create it anew.
        with sqlite3.connect(f"file:{database}?mode=rw", uri=True) as db:
            rows = db.execute(
                "SELECT seq, id, filename, purpose, bytes, created_at, expires_at FROM files ORDER BY seq"
            ).fetchall()
        db.close()
    except sqlite3.OperationalError as exc:
        if database.exists():
            raise
        log.info("files: %s was imported by another server meanwhile (%s)", database, exc)
        return
    records = [
        FileRecord(
            file=FileObject(
                id=file_id, filename=filename, purpose=purpose, bytes=size, created_at=created, expires_at=expires
            ),
            # Within one second the old upload order (seq) is kept.
            order=order_at(created * 1_000_000_000 + seq),
        )
        for seq, file_id, filename, purpose, size, created, expires in rows
        if (root / "blobs" / file_id).exists()
    ]
    added = await adopt(kv, records)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):  # -wal and -shm exist only while a connection is open
            os.replace(root / f"files.db{suffix}", root / f"files.db.imported{suffix}")
    log.info("files: imported %d file(s) from %s (now files.db.imported)", added, database)
