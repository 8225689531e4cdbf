"""The Files API over HTTP with the official openai client: metadata kept by core in the stack's storage, bytes by
inline::localfs; pagination, expiry, servers sharing one data directory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from lamina.apis.files.router import Pending, files_registry
from lamina.config import ConfigError
from lamina.storage import Registry
from lamina.storage.sqlite import SQLiteStorageConfig, open_storage
from lamina.testing import serve
from openai import OpenAI


def config(storage: Path, **files_api: Any) -> dict[str, Any]:
    return {
        "storage": {"dir": str(storage)},
        "providers": {"files": [{"id": "files", "type": "inline::localfs", "config": {}}]},
        "apis": {"files": files_api},
    }


def client_of(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def expire(data_dir: Path, file_id: str) -> None:
    """Move a file's expiry into the past through the storage (OpenAI's shortest `expires_after` is an hour)."""

    async def run() -> None:
        storage = await open_storage(SQLiteStorageConfig(), data_dir)
        try:
            registry = files_registry(storage.kv)
            record = await registry.get(file_id)
            assert record is not None
            record.file.expires_at = int(time.time()) - 1
            await registry.put(record)
        finally:
            await storage.close()

    asyncio.run(run())


def test_pagination_in_both_orders_and_by_purpose(tmp_path: Path) -> None:
    with serve(config(tmp_path)) as base_url:
        client = client_of(base_url)
        purposes = ["assistants", "batch", "assistants", "user_data", "assistants", "batch", "assistants"]
        ids = [client.files.create(file=(f"f{i}.txt", b"x" * i), purpose=p).id for i, p in enumerate(purposes)]  # type: ignore[arg-type]

        def walk(order: str, purpose: str | None = None) -> list[list[str]]:
            pages, after = [], None
            while True:
                query: dict[str, Any] = {"limit": 2, "order": order}
                if after:
                    query["after"] = after
                if purpose:
                    query["purpose"] = purpose
                page = requests.get(f"{base_url}/files", params=query, timeout=10).json()
                pages.append([f["id"] for f in page["data"]])
                assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
                if not page["has_more"]:
                    return pages
                after = page["last_id"]

        assert walk("asc") == [ids[0:2], ids[2:4], ids[4:6], ids[6:]]
        assert walk("desc") == [ids[6:4:-1], ids[4:2:-1], ids[2:0:-1], ids[:1]]
        assistants = [i for i, p in zip(ids, purposes, strict=True) if p == "assistants"]
        assert walk("asc", "assistants") == [assistants[:2], assistants[2:]]
        assert walk("desc", "batch") == [[ids[5], ids[1]]]
        # The openai client follows `after` itself.
        assert [f.id for f in client.files.list(limit=3)] == ids[::-1]
        assert [f.id for f in client.files.list(limit=3, order="asc", purpose="assistants")] == assistants
        assert client.files.list(purpose="fine-tune").data == []
        assert client.files.list(order="asc", after=ids[-1]).data == []

        unknown = requests.get(f"{base_url}/files", params={"after": "file-unknown"}, timeout=10)
        assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "after"
        for bad in ({"order": "sideways"}, {"limit": "0"}, {"limit": "10001"}):
            assert requests.get(f"{base_url}/files", params=bad, timeout=10).status_code == 400


def test_unknown_files_are_openai_shaped_404s(tmp_path: Path) -> None:
    with serve(config(tmp_path)) as base_url:
        for method, path in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
            answer = requests.request(method, f"{base_url}/files/file-nope{path}", timeout=10)
            assert answer.status_code == 404
            assert answer.json()["error"] == {
                "request_id": answer.headers["x-request-id"],
                "message": "file 'file-nope' not found",
                "type": "not_found_error",
                "param": "file_id",
                "code": "not_found",
            }
        client = client_of(base_url)
        uploaded = client.files.create(file=("once.txt", b"once"), purpose="assistants")
        assert client.files.delete(uploaded.id).deleted
        with pytest.raises(openai.NotFoundError):
            client.files.delete(uploaded.id)


def test_downloads_stream_with_length_and_name(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: several chunks
    with serve(config(tmp_path)) as base_url:
        client = client_of(base_url)
        uploaded = client.files.create(file=("résumé v2.bin", payload), purpose="assistants")
        with requests.get(f"{base_url}/files/{uploaded.id}/content", stream=True, timeout=10) as answer:
            assert answer.headers["content-length"] == str(len(payload))
            assert answer.headers["content-disposition"] == "attachment; filename*=utf-8''r%C3%A9sum%C3%A9%20v2.bin"
            assert b"".join(answer.iter_content(65536)) == payload
        plain = client.files.create(file=("plain.txt", b"abc"), purpose="assistants")
        answer = requests.get(f"{base_url}/files/{plain.id}/content", timeout=10)
        assert answer.headers["content-disposition"] == 'attachment; filename="plain.txt"' and answer.content == b"abc"


def test_expired_files_are_neither_listed_nor_served_and_their_bytes_go(tmp_path: Path) -> None:
    blobs = tmp_path / "files" / "blobs"
    with serve(config(tmp_path)) as base_url:
        client = client_of(base_url)
        lasting = client.files.create(
            file=("hour.txt", b"an hour"), purpose="batch", expires_after={"anchor": "created_at", "seconds": 3600}
        )
        assert lasting.expires_at == lasting.created_at + 3600
        touched, listed, untouched = (
            client.files.create(file=(f"{name}.txt", name.encode()), purpose="batch").id
            for name in ("touched", "listed", "untouched")
        )
        for file_id in (touched, listed, untouched):
            expire(tmp_path, file_id)
        # Deleted by the first request that meets them: a retrieve or download by id, or a listing.
        with pytest.raises(openai.NotFoundError):
            client.files.content(touched)
        assert not (blobs / touched).exists()
        assert [f.id for f in client.files.list(purpose="batch")] == [lasting.id]
        assert not (blobs / listed).exists() and not (blobs / untouched).exists()

        straggler = client.files.create(file=("s.txt", b"s"), purpose="assistants").id
        expire(tmp_path, straggler)
    assert (blobs / straggler).exists()  # nothing asked for it while the server ran
    with serve(config(tmp_path)):  # the sweep at start-up deletes it
        assert not (blobs / straggler).exists()
        assert (blobs / lasting.id).exists()


def test_the_periodic_sweep_deletes_expired_files_nobody_asks_for(tmp_path: Path) -> None:
    blobs = tmp_path / "files" / "blobs"
    with serve(config(tmp_path, sweep_seconds=0.2)) as base_url:
        client = client_of(base_url)
        kept = client.files.create(file=("kept.txt", b"kept"), purpose="assistants").id
        swept = client.files.create(file=("swept.txt", b"swept"), purpose="assistants").id
        expire(tmp_path, swept)
        deadline = time.monotonic() + 30
        while (blobs / swept).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (blobs / swept).exists() and (blobs / kept).exists()
        assert [f.id for f in client.files.list()] == [kept]


def test_bad_files_api_settings_stop_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sweep_seconds"), serve(config(tmp_path, sweep_seconds=0)):
        pass
    with pytest.raises(ConfigError, match="sweep_every"), serve(config(tmp_path, sweep_every=5)):
        pass


def test_two_servers_over_one_data_directory_agree_and_restarts_keep_everything(tmp_path: Path) -> None:
    with serve(config(tmp_path)) as first_url, serve(config(tmp_path)) as second_url:
        first, second = client_of(first_url), client_of(second_url)
        a = first.files.create(file=("a.txt", b"from the first"), purpose="assistants")
        b = second.files.create(file=("b.txt", b"from the second"), purpose="user_data")
        for client in (first, second):
            assert [f.id for f in client.files.list()] == [b.id, a.id]
            assert client.files.content(a.id).read() == b"from the first"
            assert client.files.retrieve(b.id).filename == "b.txt"
        second.files.delete(a.id)
        with pytest.raises(openai.NotFoundError):
            first.files.retrieve(a.id)
        with pytest.raises(openai.NotFoundError):
            first.files.content(a.id)
        assert [f.id for f in first.files.list()] == [b.id]
    with serve(config(tmp_path)) as base_url:
        client = client_of(base_url)
        assert client.files.retrieve(b.id).model_dump() == b.model_dump()
        assert client.files.content(b.id).read() == b"from the second"
        assert [f.id for f in client.files.list()] == [b.id]


def test_the_sweep_finishes_what_a_crash_interrupted_and_nothing_else(tmp_path: Path) -> None:
    blobs = tmp_path / "files" / "blobs"
    with serve(config(tmp_path)) as base_url:
        client = client_of(base_url)
        kept, half_deleted, unmarked = (
            client.files.create(file=(f"{name}.txt", name.encode()), purpose="assistants").id
            for name in ("kept", "half-deleted", "unmarked")
        )
    long_ago, now = time.time() - 7200, time.time()
    (blobs / "file-upload-crashed").write_bytes(b"bytes written, metadata never")
    (blobs / "file-upload-running").write_bytes(b"another server is finishing this one")

    async def crash_leftovers() -> None:
        storage = await open_storage(SQLiteStorageConfig(), tmp_path)
        try:
            pending = Registry(storage.kv, "files-pending/", Pending, key=lambda marker: marker.id)
            await pending.put(Pending(id="file-upload-crashed", since=long_ago))
            await pending.put(Pending(id="file-upload-running", since=now))
            await pending.put(Pending(id=half_deleted, since=long_ago))  # metadata deleted, then the crash
            await files_registry(storage.kv).delete(half_deleted)
            await files_registry(storage.kv).delete(unmarked)  # metadata lost some other way: no marker
            await pending.put(Pending(id=kept, since=long_ago))  # crashed after the metadata was written
        finally:
            await storage.close()

    async def markers() -> list[str]:
        storage = await open_storage(SQLiteStorageConfig(), tmp_path)
        try:
            return [m.id for m in await Registry(storage.kv, "files-pending/", Pending, key=lambda m: m.id).list()]
        finally:
            await storage.close()

    asyncio.run(crash_leftovers())
    with serve(config(tmp_path)) as base_url:
        client = client_of(base_url)
        assert [f.id for f in client.files.list()] == [kept]
        assert client.files.content(kept).read() == b"kept"
    left = {blob.name for blob in blobs.iterdir()}
    assert left == {kept, unmarked, "file-upload-running"}
    assert asyncio.run(markers()) == ["file-upload-running"]
