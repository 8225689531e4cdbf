"""remote::postgres files over HTTP: sizes at and around the 1 MiB row boundary round-trip byte for byte, an
upload past the limit is a 413 that leaves nothing behind, and a deleted file's rows are gone."""

from __future__ import annotations

import os
from pathlib import Path

import requests
from lamina.testing import serve
from openai import OpenAI
from test_replicas import fetch_value

MIB = 1024 * 1024


def test_bytes_round_trip_and_the_limit(postgres_url: str, tmp_path: Path) -> None:
    config = {
        "storage": {"dir": str(tmp_path), "type": "postgres", "config": {"url": postgres_url}},
        "providers": {"files": [{"id": "files", "type": "remote::postgres", "config": {"max_upload_bytes": 3 * MIB}}]},
    }
    with serve(config) as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        for size in (0, 1, MIB - 1, MIB, MIB + 1, 3 * MIB):
            data = os.urandom(size)
            uploaded = client.files.create(file=(f"{size}.bin", data), purpose="assistants")
            assert uploaded.bytes == size
            assert client.files.content(uploaded.id).read() == data
            rows = fetch_value(postgres_url, "SELECT count(*) FROM lamina_file_bytes WHERE file_id = $1", uploaded.id)
            assert rows == -(-size // MIB)  # ceil: whole rows of 1 MiB, none for an empty file
        too_big = requests.post(
            url + "/files",
            files={"file": ("big.bin", os.urandom(3 * MIB + 1))},
            data={"purpose": "assistants"},
            timeout=60,
        )
        assert too_big.status_code == 413, too_big.text
        assert fetch_value(postgres_url, "SELECT count(*) FROM lamina_files_stored") == 6
        client.files.delete(uploaded.id)
        assert fetch_value(postgres_url, "SELECT count(*) FROM lamina_file_bytes WHERE file_id = $1", uploaded.id) == 0
    assert not list((tmp_path / "files" / "spool").iterdir())  # spooled uploads are anonymous temporary files
