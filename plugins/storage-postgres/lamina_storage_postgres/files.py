"""remote::postgres files: the bytes of the Files API in Postgres, so that every replica reads what any replica
received. A file is rows of at most `CHUNK` bytes; an upload is spooled to a local temporary file as it arrives
(`Upload.write` is synchronous), then copied into Postgres one chunk at a time in one transaction, so a file id
names all of its bytes or none. Reads fetch one chunk per query: no file is ever held in memory whole."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import asyncpg
from lamina.apis.files.types import too_large

from lamina_storage_postgres.database import Schema, reachable

CHUNK = 1024 * 1024

SCHEMA = Schema(
    "files",
    [
        "CREATE TABLE lamina_file_bytes (file_id text NOT NULL, seq integer NOT NULL, data bytea NOT NULL, "
        "PRIMARY KEY (file_id, seq));"
        # A file's row is written last, in the same transaction as its chunks: it is what makes the bytes exist.
        "CREATE TABLE lamina_files_stored (file_id text PRIMARY KEY, bytes bigint NOT NULL, chunks integer NOT NULL, "
        "stored_at timestamptz NOT NULL DEFAULT now());"
        # Uploads are often compressed already (PDF, zip, images): keep chunks out of line without trying pglz.
        "ALTER TABLE lamina_file_bytes ALTER COLUMN data SET STORAGE EXTERNAL;",
    ],
)


class SpooledUpload:
    """An upload's bytes in an anonymous temporary file until `finish_upload` ships them to Postgres."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.file: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed in finish/abort

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.limit:
            raise too_large(self.limit)
        self.file.write(data)
        self.size += len(data)

    def abort(self) -> None:
        self.file.close()


class PostgresFiles:
    def __init__(self, pool: asyncpg.Pool, spool: Path, max_upload_bytes: int, store: str, owns_pool: bool) -> None:
        self.pool = pool
        self.owns_pool = owns_pool
        self.spool = spool
        self.max_upload_bytes = max_upload_bytes
        self.store = store

    async def begin_upload(self) -> SpooledUpload:
        self.spool.mkdir(parents=True, exist_ok=True)
        return SpooledUpload(self.spool, self.max_upload_bytes)

    async def finish_upload(self, upload: SpooledUpload, file_id: str) -> int:
        try:
            upload.file.seek(0)
            async with reachable(self.store), self.pool.acquire() as connection, connection.transaction():
                seq = 0
                while chunk := await asyncio.to_thread(upload.file.read, CHUNK):
                    await connection.execute(
                        "INSERT INTO lamina_file_bytes (file_id, seq, data) VALUES ($1, $2, $3)", file_id, seq, chunk
                    )
                    seq += 1
                await connection.execute(
                    "INSERT INTO lamina_files_stored (file_id, bytes, chunks) VALUES ($1, $2, $3)",
                    file_id,
                    upload.size,
                    seq,
                )
        finally:
            upload.file.close()
        return upload.size

    async def read(self, file_id: str) -> AsyncIterator[bytes]:
        async with reachable(self.store):
            chunks = await self.pool.fetchval("SELECT chunks FROM lamina_files_stored WHERE file_id = $1", file_id)
        if chunks is None:
            raise FileNotFoundError(file_id)
        for seq in range(chunks):
            async with reachable(self.store):
                data = await self.pool.fetchval(
                    "SELECT data FROM lamina_file_bytes WHERE file_id = $1 AND seq = $2", file_id, seq
                )
            if data is None:  # deleted while being read
                raise FileNotFoundError(file_id)
            yield data

    async def delete(self, file_id: str) -> None:
        async with reachable(self.store), self.pool.acquire() as connection, connection.transaction():
            await connection.execute("DELETE FROM lamina_files_stored WHERE file_id = $1", file_id)
            await connection.execute("DELETE FROM lamina_file_bytes WHERE file_id = $1", file_id)

    async def ready(self) -> None:
        """The readiness check (`/v1/health/ready`): the database holding the bytes answers, or a 503 names it."""
        async with reachable(self.store):
            await self.pool.fetchval("SELECT 1")

    async def close(self) -> None:
        if self.owns_pool:
            await self.pool.close()
