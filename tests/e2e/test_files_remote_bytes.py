"""The Files API on a provider with no local files: its bytes live in the stack's key-value store. Downloads stream
through `read`, and vector stores still extract text, from the router's temporary copy (`FilesRouter.file_path`)."""

from __future__ import annotations

import base64
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import lamina
import pytest
from lamina.apis.files.types import too_large
from lamina.plugins import make_plugin_manager
from lamina.storage import KVStore
from lamina.testing import serve
from openai import OpenAI

CHUNK = 64 * 1024


class SpooledUpload:
    """Spooled to an anonymous temporary file as it arrives; shipped to the store by `finish_upload`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.spool: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish_upload/abort

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.limit:
            raise too_large(self.limit)
        self.spool.write(data)
        self.size += len(data)

    def abort(self) -> None:
        self.spool.close()


class KVBytes:
    """Bytes under `kvbytes/<id>/<n>` (base64, one key per chunk); `kvbytes-count/<id>` says how many chunks."""

    def __init__(self, kv: KVStore, max_upload_bytes: int) -> None:
        self.kv = kv
        self.max_upload_bytes = max_upload_bytes

    async def begin_upload(self) -> SpooledUpload:
        return SpooledUpload(self.max_upload_bytes)

    async def finish_upload(self, upload: SpooledUpload, file_id: str) -> int:
        upload.spool.seek(0)
        count = 0
        while chunk := upload.spool.read(CHUNK):
            await self.kv.set(f"kvbytes/{file_id}/{count:08d}", base64.b64encode(chunk).decode())
            count += 1
        upload.spool.close()
        await self.kv.set(f"kvbytes-count/{file_id}", count)  # last: only complete files are readable
        return upload.size

    async def read(self, file_id: str) -> AsyncIterator[bytes]:
        count = await self.kv.get(f"kvbytes-count/{file_id}")
        if count is None:
            raise FileNotFoundError(file_id)
        for index in range(count):
            yield base64.b64decode(await self.kv.get(f"kvbytes/{file_id}/{index:08d}"))

    async def delete(self, file_id: str) -> None:
        count = await self.kv.get(f"kvbytes-count/{file_id}")
        await self.kv.delete(f"kvbytes-count/{file_id}")
        for index in range(count or 0):
            await self.kv.delete(f"kvbytes/{file_id}/{index:08d}")


class KVBytesConfig(lamina.ProviderConfig):
    max_upload_bytes: int = 5_000_000


async def create(config: KVBytesConfig, deps: lamina.Deps) -> KVBytes:
    return KVBytes(deps.storage.kv, config.max_upload_bytes)


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [lamina.ProviderSpec(api="files", type="remote::kvbytes", config=KVBytesConfig, create=create)]


def plugin_manager() -> Any:
    pm = make_plugin_manager()
    pm.register(sys.modules[__name__], name="test-kvbytes")
    return pm


def config(storage: Path, **providers: Any) -> dict[str, Any]:
    return {
        "storage": {"dir": str(storage)},
        "providers": {"files": [{"id": "kv", "type": "remote::kvbytes", "config": {}}], **providers},
    }


def test_upload_download_and_delete_without_local_files(tmp_path: Path) -> None:
    payload = os.urandom(300_000)  # five chunks of the store
    with serve(config(tmp_path), pm=plugin_manager()) as base_url:
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        uploaded = client.files.create(file=("random.bin", payload), purpose="assistants")
        empty = client.files.create(file=("empty.bin", b""), purpose="assistants")
        assert client.files.content(uploaded.id).read() == payload
        assert client.files.content(empty.id).read() == b""
        assert [f.id for f in client.files.list()] == [empty.id, uploaded.id]
        client.files.delete(uploaded.id)
    with serve(config(tmp_path), pm=plugin_manager()) as base_url:
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        assert [f.id for f in client.files.list()] == [empty.id]
    assert not any((tmp_path / "kv").iterdir())  # its own folder stays empty: nothing of it is on local disk


def test_vector_stores_read_files_of_a_provider_without_local_files(tmp_path: Path) -> None:
    minilm = os.environ.get("LAMINA_TEST_MINILM")
    if not minilm or not Path(minilm).is_dir():
        pytest.skip("LAMINA_TEST_MINILM (a folder of all-MiniLM-L6-v2) is not set")
    inline = {
        "inference": [{"id": "st", "type": "inline::sentence-transformers", "config": {"models": [minilm]}}],
        "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib", "config": {}}],
    }
    with serve(config(tmp_path, **inline), pm=plugin_manager()) as base_url:
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        text = b"Honey bees live in colonies with one queen and thousands of workers that make honey."
        file = client.files.create(file=("bees.txt", text), purpose="assistants")
        store = client.vector_stores.create(name="bees")
        attached = client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=file.id)
        assert attached.status == "completed", attached.last_error
        hits = client.vector_stores.search(store.id, query="Who makes honey?")
        assert hits.data[0].file_id == file.id and "queen" in hits.data[0].content[0].text
