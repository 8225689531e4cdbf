"""The Files API on inline::localfs through a real server and the official openai client."""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from lamina.testing import serve
from openai import OpenAI


def config(storage: Path, limit: int = 200_000) -> dict[str, Any]:
    return {
        "storage": {"dir": str(storage)},
        "providers": {"files": [{"id": "files", "type": "inline::localfs", "config": {"max_upload_bytes": limit}}]},
    }


def test_upload_list_download_delete_and_restart(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 600  # 150 kB of every byte value
    with serve(config(tmp_path)) as base_url:
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        uploaded = client.files.create(file=("data.bin", payload), purpose="assistants")
        assert uploaded.bytes == len(payload) and uploaded.filename == "data.bin" and uploaded.id.startswith("file-")
        assert client.files.content(uploaded.id).read() == payload
        others = [client.files.create(file=(f"n{i}.txt", b"x"), purpose="user_data") for i in range(5)]
        assert [f.id for f in client.files.list(purpose="user_data")] == [f.id for f in reversed(others)]
        page = client.files.list(limit=2, order="asc")
        assert [f.id for f in page.data] == [uploaded.id, others[0].id] and page.has_more
        after = client.files.list(limit=10, order="asc", after=page.data[-1].id)
        assert [f.id for f in after.data] == [f.id for f in others[1:]] and not after.has_more
        assert client.files.delete(others[0].id).deleted
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(others[0].id)
    with serve(config(tmp_path)) as base_url:  # everything is on disk
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        assert client.files.retrieve(uploaded.id).bytes == len(payload)
        assert client.files.content(uploaded.id).read() == payload
        assert len(client.files.list().data) == 5
    blobs = sorted(p.name for p in (tmp_path / "files" / "blobs").iterdir())
    assert uploaded.id in blobs and others[0].id not in blobs and len(blobs) == 5


def test_bad_uploads(tmp_path: Path) -> None:
    with serve(config(tmp_path, limit=100_000)) as base_url:
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as too_big:
            client.files.create(file=("big.txt", b"a" * 100_001), purpose="assistants")
        assert too_big.value.status_code == 413
        assert client.files.create(file=("fits.txt", b"a" * 100_000), purpose="assistants").bytes == 100_000
        with pytest.raises(openai.BadRequestError):
            client.files.create(file=("a.txt", b"x"), purpose="nonsense")  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError):
            client.files.create(
                file=("a.txt", b"x"), purpose="assistants", expires_after={"anchor": "created_at", "seconds": 5}
            )
        expiring = client.files.create(
            file=("a.txt", b"x"), purpose="batch", expires_after={"anchor": "created_at", "seconds": 3600}
        )
        assert expiring.expires_at == expiring.created_at + 3600
        empty = client.files.create(file=("empty.txt", b""), purpose="assistants")
        assert empty.bytes == 0 and client.files.content(empty.id).read() == b""
        no_file = requests.post(f"{base_url}/files", files={"purpose": (None, "assistants")}, timeout=10)
        assert no_file.status_code == 400
        not_multipart = requests.post(f"{base_url}/files", json={"purpose": "assistants"}, timeout=10)
        assert not_multipart.status_code == 400
        with pytest.raises(openai.BadRequestError):
            client.files.list(limit=0)
    assert list((tmp_path / "files" / "uploads").iterdir()) == []  # rejected uploads leave nothing behind


def test_names_never_touch_the_file_system(tmp_path: Path) -> None:
    with serve(config(tmp_path)) as base_url:
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        for name in ("../../escape.txt", "/etc/passwd", "..\\..\\win.txt", "a/b/../../c.txt"):
            uploaded = client.files.create(file=(name, b"secret"), purpose="assistants")
            assert "/" not in uploaded.filename and "\\" not in uploaded.filename
        for bad_id in ("..%2F..%2Ffiles.db", "file-../../files.db"):
            assert requests.get(f"{base_url}/files/{bad_id}/content", timeout=10).status_code == 404
    stored = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert not any("escape" in p or "win.txt" in p or p.endswith("c.txt") for p in stored)


def test_streamed_upload_of_a_large_file(tmp_path: Path) -> None:
    size = 30 * 1024 * 1024
    with serve(config(tmp_path, limit=size)) as base_url:
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        body = io.BytesIO(b"0123456789abcdef" * (size // 16))
        uploaded = client.files.create(file=("large.bin", body), purpose="batch")
        assert uploaded.bytes == size
        assert (tmp_path / "files" / "blobs" / uploaded.id).stat().st_size == size


# The previous version's metadata database, as its store.py created it.
LEGACY_SCHEMA = """
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


def test_a_data_directory_of_the_previous_version_keeps_its_files(tmp_path: Path) -> None:
    root = tmp_path / "files"
    (root / "blobs").mkdir(parents=True)
    (root / "uploads").mkdir()
    created = int(time.time()) - 100
    legacy = {  # id -> (filename, purpose, bytes, created_at, expires_at), in upload order
        "file-" + "a" * 24: ("notes.txt", "assistants", b"first file", created, None),
        "file-" + "0" * 24: ("data.jsonl", "batch", b'{"a": 1}\n', created, created + 7200),
        "file-" + "5" * 24: ("gone.txt", "user_data", b"expired", created - 7200, created - 3600),
    }
    db = sqlite3.connect(root / "files.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(LEGACY_SCHEMA)
    for file_id, (filename, purpose, content, created_at, expires_at) in legacy.items():
        (root / "blobs" / file_id).write_bytes(content)
        db.execute(
            "INSERT INTO files (id, filename, purpose, bytes, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            (file_id, filename, purpose, len(content), created_at, expires_at),
        )
    db.commit()
    db.close()
    first, second, expired = legacy
    with serve(config(tmp_path)) as base_url:
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        # The old order is kept within one second (ids sort the other way), and the expired file is gone.
        assert [f.id for f in client.files.list(order="asc")] == [first, second]
        kept = client.files.retrieve(second)
        assert (kept.filename, kept.purpose, kept.bytes, kept.expires_at) == ("data.jsonl", "batch", 9, created + 7200)
        assert client.files.content(first).read() == b"first file"
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(expired)
        new = client.files.create(file=("new.txt", b"new"), purpose="assistants")
        assert [f.id for f in client.files.list()] == [new.id, second, first]
        client.files.delete(first)
    assert not (root / "files.db").exists() and (root / "files.db.imported").exists()
    assert not (root / "blobs" / expired).exists() and not (root / "blobs" / first).exists()
    with serve(config(tmp_path)) as base_url:  # imported once: the deleted file does not come back
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        assert [f.id for f in client.files.list()] == [new.id, second]
        assert client.files.content(second).read() == b'{"a": 1}\n'
