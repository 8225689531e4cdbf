"""The `custom` provider asking an endpoint this test serves on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from http_endpoint import Endpoint, files_stack
from lamina.testing import serve

PEOPLE = {"tok-alice": {"principal": "alice", "attributes": {"teams": ["ml"]}}, "tok-bob": {"principal": "bob"}}


def answer(method: str, body: Any) -> tuple[int, Any]:
    token = (body or {}).get("token")
    if token == "tok-broken":
        return 500, {"oops": True}
    return (200, PEOPLE[token]) if token in PEOPLE else (401, {"error": "who?"})


def call(url: str, method: str, path: str, token: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10, **kwargs)


def test_the_endpoint_names_the_caller(tmp_path: Path, endpoint: Endpoint) -> None:
    endpoint.answer = answer
    provider = {"id": "mine", "type": "custom", "config": {"endpoint": endpoint.url + "check", "cache_seconds": 60}}
    with serve(files_stack(tmp_path, {"providers": [provider]})) as url:
        upload = {"files": {"file": ("a.txt", b"x")}, "data": {"purpose": "assistants"}}
        file_id = call(url, "POST", "/files", "tok-alice", **upload).json()["id"]
        assert call(url, "GET", f"/files/{file_id}", "tok-alice").status_code == 200
        assert call(url, "GET", f"/files/{file_id}", "tok-bob").status_code == 404
        assert call(url, "GET", "/files", "tok-eve").status_code == 401
        asked = len(endpoint.requests)
        assert call(url, "GET", "/files", "tok-alice").status_code == 200
        assert len(endpoint.requests) == asked  # answers are cached
        broken = call(url, "GET", "/files", "tok-broken")
        assert broken.status_code == 503 and "mine" in broken.json()["error"]["message"]
        assert endpoint.requests[0] == ("POST", {"token": "tok-alice"})
