"""Connection and browser protections: slow clients are cut off, loopback servers answer loopback names only,
browser pages cannot write cross-origin, CORS is opt-in; uploads are refused early; downloads are not sniffed."""

from __future__ import annotations

import io
import logging
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from e2e_helpers import assert_openai_error
from fake_openai import CHAT_MODEL, FakeOpenAI
from hardening_helpers import starter_like
from lamina.config import resolve
from lamina.guard import warn_if_exposed
from lamina.testing import serve

CHAT = {"model": f"openai/{CHAT_MODEL}", "messages": [{"role": "user", "content": "hi"}]}
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def api(fake_server: FakeOpenAI) -> Iterator[str]:
    server = {"idle_timeout": 1, "cors_origins": [ORIGIN], "allowed_hosts": ["lamina.internal"]}
    with serve(starter_like(fake_server, server=server)) as url:
        yield url


def test_partial_headers_are_timed_out(api: str) -> None:
    address = urlsplit(api)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sock.settimeout(30)  # the server closes it after idle_timeout (1s); 30s would mean it never does
        assert sock.recv(1024) == b""


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8321", "192.168.1.5"])
def test_foreign_host_names_are_refused_on_loopback(api: str, host: str) -> None:
    response = requests.get(f"{api}/models", headers={"Host": host})
    assert_openai_error(response, 421, code="misdirected_request")


@pytest.mark.parametrize("host", ["localhost:1234", "127.0.0.1", "[::1]:80", "lamina.internal"])
def test_loopback_and_allowed_host_names_are_served(api: str, host: str) -> None:
    assert requests.get(f"{api}/health", headers={"Host": host}).status_code == 200


def test_cross_origin_writes_are_refused(api: str, fake: FakeOpenAI) -> None:
    response = requests.post(f"{api}/chat/completions", json=CHAT, headers={"Origin": "https://evil.example"})
    assert_openai_error(response, 403, code="origin_not_allowed")
    assert not fake.hits("/v1/chat/completions")
    assert requests.delete(f"{api}/files/x", headers={"Origin": "null"}).status_code == 403


def test_same_origin_writes_are_served(api: str) -> None:
    """A page the server itself serves (the playground) sends its own origin on writes."""
    own = api.removesuffix("/v1")
    response = requests.post(f"{api}/chat/completions", json=CHAT, headers={"Origin": own})
    assert response.status_code == 200, response.text
    other_port = requests.post(f"{api}/chat/completions", json=CHAT, headers={"Origin": own.rsplit(":", 1)[0] + ":1"})
    assert_openai_error(other_port, 403, code="origin_not_allowed")


def test_cors_for_listed_origins(api: str) -> None:
    preflight = requests.options(
        f"{api}/chat/completions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    response = requests.post(f"{api}/chat/completions", json=CHAT, headers={"Origin": ORIGIN})
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == ORIGIN


def test_no_cors_unless_configured(fake_server: FakeOpenAI) -> None:
    with serve(starter_like(fake_server)) as url:
        response = requests.get(f"{url}/models", headers={"Origin": ORIGIN})
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_405_names_the_allowed_methods(api: str) -> None:
    response = requests.put(f"{api}/embeddings", json=CHAT)
    assert_openai_error(response, 405)
    assert response.headers["allow"] == "POST"
    # Two routes share /files (GET lists, POST uploads): the Allow names both, not the first route's alone.
    response = requests.put(f"{api}/files", json=CHAT)
    assert_openai_error(response, 405)
    assert {"GET", "POST"} <= set(response.headers["allow"].split(", "))


def test_oversized_upload_refused_by_content_length(api: str) -> None:
    address = urlsplit(api)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n" % (100 * 1024**3)
        )
        assert sock.recv(1024).split(b" ", 2)[1] == b"413"  # announced 100 GB, sent none: refused at once


def test_two_file_parts_are_400(api: str) -> None:
    files = [
        ("file", ("a.txt", io.BytesIO(b"aaa"), "text/plain")),
        ("file", ("b.txt", io.BytesIO(b"bbb"), "text/plain")),
    ]
    response = requests.post(f"{api}/files", files=files, data={"purpose": "assistants"})
    assert_openai_error(response, 400, param="file", message_contains="more than one")


def test_downloads_are_not_sniffed(api: str) -> None:
    files = {"file": ("page.html", io.BytesIO(b"<script>alert(1)</script>"), "text/html")}
    file_id = requests.post(f"{api}/files", files=files, data={"purpose": "assistants"}).json()["id"]
    response = requests.get(f"{api}/files/{file_id}/content")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-type"] == "application/octet-stream"


def test_public_bind_without_auth_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="lamina")
    warn_if_exposed(resolve({"server": {"host": "127.0.0.1"}}))
    assert not caplog.records
    warn_if_exposed(resolve({"server": {"host": "0.0.0.0"}}))
    assert "without authentication" in caplog.text


def test_chunked_oversized_upload_stops_at_the_limit(fake_server: FakeOpenAI) -> None:
    """No Content-Length: the upload is read up to the files provider's limit, then refused; not drained."""
    config = starter_like(fake_server)
    config["providers"]["files"][0]["config"] = {"max_upload_bytes": 256 * 1024}
    with serve(config) as url:
        address = urlsplit(url)
        with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            )
            head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
            sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
            piece = b"x" * 65536
            sent, total = 0, 100 * 1024 * 1024
            while sent < total and not select.select([sock], [], [], 0)[0]:
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(piece)
            assert sent < total, "the server read the whole 100 MB upload"
            assert sock.recv(1024).split(b" ", 2)[1] == b"413"


def test_lamina_config_masks_secret_headers_and_url_passwords(tmp_path: Path) -> None:
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(
        "providers:\n  inference:\n    - id: up\n      type: remote::openai\n      config:\n"
        "        base_url: https://bob:hunter2@up.example/v1\n"
        "        headers: {api-key: k-1, X-Api-Key: k-2, OpenAI-Organization: org-3}\n"
    )
    lamina = Path(sys.executable).parent / "lamina"
    result = subprocess.run([str(lamina), "config", str(run_yaml)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for secret in ("k-1", "k-2", "org-3", "hunter2"):
        assert secret not in result.stdout + result.stderr
    assert "bob:********@up.example" in result.stdout
