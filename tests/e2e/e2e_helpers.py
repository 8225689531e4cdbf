"""Checks the end-to-end tests share."""

from __future__ import annotations

from typing import Any

import requests
from fake_openai import FakeOpenAI, free_port

SECRET = "sk-test-secret-123"


def assert_openai_error(response: requests.Response, status: int, **expected: Any) -> dict[str, Any]:
    """The response has `status` and OpenAI's error body; `expected` pins some of its fields."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) - {"trace_id"} == {"message", "type", "param", "code", "request_id"}, error
    assert error["request_id"] == response.headers["x-request-id"], error  # a report can be found in the logs
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    for key, value in expected.items():
        if key == "message_contains":
            for part in [value] if isinstance(value, str) else value:
                assert part in error["message"], (part, error)
        else:
            assert error[key] == value, (key, error)
    return error


def assert_healthy(base_url: str) -> None:
    response = requests.get(f"{base_url}/health", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "OK"}


def gateway_config(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    """A run config with three providers: `fake` (retries fast), `slow` (short read timeout), `down` (no server)."""
    common = {"base_url": fake.base_url, "retry_backoff": 0.01}
    return {
        "distro": "e2e",
        "providers": {
            "inference": [
                {"id": "fake", "type": "remote::openai", "config": {**common, "api_key": SECRET, "max_retries": 2}},
                {
                    "id": "slow",
                    "type": "remote::openai",
                    "config": {**common, "read_timeout": 0.5, "first_byte_timeout": 0.5, "max_retries": 0},
                },
                {
                    "id": "down",
                    "type": "remote::openai",
                    "config": {
                        "base_url": f"http://127.0.0.1:{free_port()}/v1",
                        "max_retries": 1,
                        "retry_backoff": 0.01,
                        "connect_timeout": 1,
                    },
                },
            ]
        },
        **extra,
    }
