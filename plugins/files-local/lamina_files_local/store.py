"""Files on local disk. The database row is written after the bytes are in place, and removed before them,
so a crash can leave only orphans (swept at start-up), never a row without its bytes."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import aiosqlite
from lamina.apis.files.types import FileObject, too_large
from lamina.errors import not_found
from lamina.storage.sqlite import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS files_purpose ON files (purpose, seq);
"""
COLUMNS = "id, filename, purpose, bytes, created_at, expires_at"


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


def _file(row: tuple) -> FileObject:
    return FileObject(id=row[0], filename=row[1], purpose=row[2], bytes=row[3], created_at=row[4], expires_at=row[5])


class LocalFiles:
    def __init__(self, root: Path, db: aiosqlite.Connection, max_upload_bytes: int) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.uploads = root / "uploads"
        self.db = db
        self.max_upload_bytes = max_upload_bytes

    @classmethod
    async def open(cls, root: Path, max_upload_bytes: int) -> LocalFiles:
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "uploads").mkdir(parents=True, exist_ok=True)
        db = await connect(root / "files.db")
        await db.executescript(SCHEMA)
        await db.commit()
        files = cls(root, db, max_upload_bytes)
        await files._sweep()
        return files

    async def _sweep(self) -> None:
        """Drop what a crash can leave behind: unfinished uploads and bytes whose row never got written."""
        for part in self.uploads.iterdir():
            part.unlink(missing_ok=True)
        async with self.db.execute("SELECT id FROM files") as cursor:
            known = {row[0] async for row in cursor}
        for blob in self.blobs.iterdir():
            if blob.name not in known:
                blob.unlink(missing_ok=True)

    async def close(self) -> None:
        await self.db.close()

    async def begin_upload(self) -> LocalUpload:
        return LocalUpload(self.uploads / f"{secrets.token_hex(16)}.part", self.max_upload_bytes)

    async def finish_upload(
        self, upload: LocalUpload, *, filename: str, purpose: str, expires_at: int | None
    ) -> FileObject:
        file_id = "file-" + secrets.token_hex(12)
        upload.finish()
        os.replace(upload.path, self.blobs / file_id)
        created_at = int(time.time())
        if expires_at is not None:
            expires_at = max(expires_at, created_at)
        await self.db.execute(
            f"INSERT INTO files ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (file_id, filename, purpose, upload.size, created_at, expires_at),
        )
        await self.db.commit()
        return FileObject(
            id=file_id,
            filename=filename,
            purpose=purpose,
            bytes=upload.size,
            created_at=created_at,
            expires_at=expires_at,
        )

    async def _expire(self) -> None:
        async with self.db.execute(
            "SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?", (int(time.time()),)
        ) as cursor:
            expired = [row[0] async for row in cursor]
        for file_id in expired:
            await self._remove(file_id)

    async def list_files(
        self, *, after: str | None, limit: int, order: str, purpose: str | None
    ) -> tuple[list[FileObject], bool]:
        await self._expire()
        where, args = [], []
        if purpose:
            where.append("purpose = ?")
            args.append(purpose)
        if after:
            async with self.db.execute("SELECT seq FROM files WHERE id = ?", (after,)) as cursor:
                row = await cursor.fetchone()
            if row is None:
                raise not_found(f"file '{after}' (the `after` cursor) not found", param="after")
            where.append("seq < ?" if order == "desc" else "seq > ?")
            args.append(row[0])
        sql = f"SELECT {COLUMNS} FROM files"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY seq {'DESC' if order == 'desc' else 'ASC'} LIMIT ?"
        async with self.db.execute(sql, (*args, limit + 1)) as cursor:
            rows = await cursor.fetchall()
        return [_file(row) for row in rows[:limit]], len(rows) > limit

    async def get_file(self, file_id: str) -> FileObject:
        async with self.db.execute(f"SELECT {COLUMNS} FROM files WHERE id = ?", (file_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None or (row[5] is not None and row[5] <= time.time()):
            if row is not None:
                await self._remove(file_id)
            raise not_found(f"file '{file_id}' not found", param="file_id")
        return _file(row)

    async def file_path(self, file_id: str) -> Path:
        await self.get_file(file_id)
        return self.blobs / file_id

    async def delete_file(self, file_id: str) -> None:
        await self.get_file(file_id)
        await self._remove(file_id)

    async def _remove(self, file_id: str) -> None:
        await self.db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        await self.db.commit()
        (self.blobs / file_id).unlink(missing_ok=True)
