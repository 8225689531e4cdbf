"""What a files provider implements: a store of bytes under file ids. Nothing else.

The files router owns everything else about a file: its id (made by the router), its metadata (a `FileObject` in
the stack's storage), listing, pagination, expiry and existence checks. A provider never sees a filename or a
purpose, and is only ever asked about ids the router made. So a new backend (S3, a database) is these methods:

    max_upload_bytes: int
        Uploads larger than this are refused with a 413 (raise `lamina.apis.files.types.too_large(limit)` from
        `Upload.write`).

    async def begin_upload(self) -> Upload
        Start receiving a file. The router writes the bytes into the `Upload` as they arrive from the client, then
        calls `finish_upload` or `Upload.abort`.

    async def finish_upload(self, upload: Upload, file_id: str) -> int
        Make the upload's bytes durable under `file_id` and return their count. Bytes become readable by id only
        here, complete: a crash before never leaves half a file under an id.

    async def read(self, file_id: str) -> AsyncIterator[bytes]
        The bytes of `file_id`, in chunks, as an async generator (`async def` with `yield`): downloads stream
        from it, and no file is ever read whole into memory. Raise `FileNotFoundError` (before the first chunk)
        when there are no bytes under `file_id`.

    def local_path(self, file_id: str) -> Path | None          (optional)
        Where the bytes of `file_id` are on this machine's disk, for readers that need a path (text extraction of
        vector stores). Without it the router makes a temporary copy through `read`.

    async def delete(self, file_id: str) -> None
        Delete the bytes of `file_id`; no error when there are none (the router retries deletions a crash
        interrupted, and deletes the bytes of uploads a crash left without metadata).

Providers are called from the event loop, except `Upload.write` and `Upload.abort`: they are synchronous and run in a
worker thread (one call at a time, in order) for the received chunks, so blocking disk writes there are fine; `write`
should still only append to local storage (spool to a temporary file, say, and ship it to a remote store in
`finish_upload`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class Upload(Protocol):
    """A file being received: bytes go to the provider's storage as they arrive, never whole into memory."""

    size: int  # bytes written so far

    def write(self, data: bytes) -> None:
        """Append `data`; raise `too_large(limit)` (a 413) when it would pass `max_upload_bytes`."""
        ...

    def abort(self) -> None:
        """Drop everything written: the upload failed or was refused."""
        ...


class FilesProvider(Protocol):
    max_upload_bytes: int

    async def begin_upload(self) -> Upload: ...

    async def finish_upload(self, upload: Upload, file_id: str) -> int: ...

    def read(self, file_id: str) -> AsyncIterator[bytes]: ...

    async def delete(self, file_id: str) -> None: ...
