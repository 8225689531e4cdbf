"""Request bodies: size limits (by Content-Length before reading, counted while streaming), bodies that stop
arriving, integers beyond 64 bits, malformed content the models accepted, content types."""

from __future__ import annotations

import select
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from e2e_helpers import assert_healthy, assert_openai_error
from fake_openai import CHAT_MODEL, FakeOpenAI
from hardening_helpers import starter_like
from lamina.testing import serve

LIMIT = 256 * 1024
CHAT = {"model": f"openai/{CHAT_MODEL}", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def api(fake_server: FakeOpenAI) -> Iterator[str]:
    with serve(starter_like(fake_server, server={"max_body_bytes": LIMIT, "body_timeout": 1})) as url:
        yield url


def raw_request(api: str, head: str) -> socket.socket:
    address = urlsplit(api)
    sock = socket.create_connection((address.hostname, address.port), timeout=30)
    sock.sendall(head.encode())
    return sock


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_content_length_over_limit_refused_before_reading(api: str) -> None:
    # 100 MB announced, not a byte of it sent: the answer comes anyway, so nothing was waited for.
    sock = raw_request(
        api,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 * 1024 * 1024}\r\n\r\n",
    )
    with sock:
        assert read_status(sock) == 413
    response = requests.post(
        f"{api}/chat/completions", data=b"x" * (LIMIT + 1), headers={"Content-Type": "application/json"}
    )
    assert_openai_error(response, 413, code="request_too_large", message_contains="max_body_bytes")
    assert_healthy(api)


def test_chunked_body_cut_off_at_the_limit(api: str) -> None:
    """A chunked 100 MB body: the server answers 413 once the limit is passed and stops reading."""
    sock = raw_request(
        api,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
    )
    piece = b"x" * 65536
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    sent, total = 0, 100 * 1024 * 1024
    with sock:
        sock.settimeout(30)
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        assert sent < total, "the server read all 100 MB"
        assert read_status(sock) == 413
    assert_healthy(api)


def test_a_body_that_stops_arriving_is_timed_out(api: str) -> None:
    sock = raw_request(
        api,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        'Content-Length: 100\r\n\r\n{"model": ',
    )
    with sock:
        assert read_status(sock) == 408  # body_timeout is 1s here


@pytest.mark.parametrize(
    "extra",
    [{"seed": 2**70}, {"max_tokens": 2**64}, {"n": -(2**80)}, {"x_vendor": {"deep": [1, 2**65]}}],
    ids=["seed", "max_tokens", "negative", "extra-field"],
)
def test_integers_beyond_64_bits_are_400(api: str, extra: dict[str, object]) -> None:
    response = requests.post(f"{api}/chat/completions", json={**CHAT, **extra})
    assert_openai_error(response, 400, message_contains="64 bits")


def test_integers_within_64_bits_pass(api: str, fake: FakeOpenAI) -> None:
    response = requests.post(f"{api}/chat/completions", json={**CHAT, "seed": 2**63 - 1, "x_id": -(2**63)})
    assert response.status_code == 200, response.text
    assert fake.hits("/v1/chat/completions")[-1]["body"]["seed"] == 2**63 - 1


def test_a_big_integer_in_chunk_metadata_is_never_stored(api: str) -> None:
    store = requests.post(f"{api}/vector_stores", json={"name": "s"}).json()
    chunk = {"content": "alpha beta", "metadata": {"n": 2**70}, "embedding": [0.5] * 8}
    response = requests.post(f"{api}/vector-io/insert", json={"vector_store_id": store["id"], "chunks": [chunk]})
    assert_openai_error(response, 400, message_contains="64 bits")
    good = {"content": "alpha beta", "metadata": {"n": 2**62}, "embedding": [0.5] * 8}
    inserted = requests.post(f"{api}/vector-io/insert", json={"vector_store_id": store["id"], "chunks": [good]})
    assert inserted.status_code == 200, inserted.text
    searched = requests.post(f"{api}/vector_stores/{store['id']}/search", json={"query": "alpha"})
    assert searched.status_code == 200, searched.text


def test_file_id_in_raw_chunk_metadata_must_be_a_string(api: str) -> None:
    store = requests.post(f"{api}/vector_stores", json={"name": "s"}).json()
    chunk = {"content": "alpha", "metadata": {"file_id": ["a", "b"]}, "embedding": [0.5] * 8}
    response = requests.post(f"{api}/vector-io/insert", json={"vector_store_id": store["id"], "chunks": [chunk]})
    assert_openai_error(response, 400, message_contains="file_id")
    searched = requests.post(f"{api}/vector_stores/{store['id']}/search", json={"query": "alpha"})
    assert searched.status_code == 200, searched.text


def test_run_shield_with_a_non_text_text_part_is_400(api: str) -> None:
    body = {"shield_id": "rules", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}
    assert_openai_error(requests.post(f"{api}/safety/run-shield", json=body), 400, message_contains="text")
    chat = {**CHAT, "messages": body["messages"]}
    assert_openai_error(requests.post(f"{api}/chat/completions", json=chat), 400, message_contains="text")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_json_endpoints_refuse_other_content_types(api: str, content_type: str) -> None:
    import json

    response = requests.post(f"{api}/chat/completions", data=json.dumps(CHAT), headers={"Content-Type": content_type})
    assert_openai_error(response, 415, code="unsupported_media_type")


def test_a_store_poisoned_by_an_earlier_version_still_answers(fake_server: FakeOpenAI, tmp_path: Path) -> None:
    """Chunks an earlier version stored with a 65-bit integer in their metadata: searches answer 200."""
    config = starter_like(fake_server)
    config["storage"] = {"dir": str(tmp_path)}
    with serve(config) as url:
        store = requests.post(f"{url}/vector_stores", json={"name": "old"}).json()
        chunk = {"content": "alpha beta", "metadata": {"n": 1}, "embedding": [0.5] * 8}
        requests.post(f"{url}/vector-io/insert", json={"vector_store_id": store["id"], "chunks": [chunk]})
    (database,) = tmp_path.rglob("vectors.db")
    with sqlite3.connect(database) as db:
        db.execute("UPDATE chunks SET metadata = ?, attributes = ?", ('{"n": 36893488147419103232}',) * 2)
    db.close()
    with serve(config) as url:
        searched = requests.post(f"{url}/vector_stores/{store['id']}/search", json={"query": "alpha"})
        assert searched.status_code == 200, searched.text
        assert searched.json()["data"][0]["attributes"] == {"n": 36893488147419103232}
        queried = requests.post(f"{url}/vector-io/query", json={"vector_store_id": store["id"], "query": "alpha"})
        assert queried.status_code == 200, queried.text
