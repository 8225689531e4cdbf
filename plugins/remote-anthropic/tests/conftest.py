"""remote::anthropic is tested through a real Lamina server in front of a fake Anthropic API (fake_anthropic.py),
with the official `openai` client."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fake_anthropic import API_KEY, FakeAnthropic
from lamina.testing import serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def anthropic_config(base_url: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": base_url, "api_key": API_KEY, "retry_backoff": 0.01, "max_retries": 1, **extra}


@pytest.fixture(scope="module")
def fake_module_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def upstream(fake_module_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    fake_module_server.reset()
    yield fake_module_server
    fake_module_server.reset()


@pytest.fixture(scope="module")
def base_url(fake_module_server: FakeAnthropic) -> Iterator[str]:
    """Lamina with three remote::anthropic providers: `claude` (the fake), `badkey` (a wrong key), `down` (no
    server). Ends in /v1."""
    url = fake_module_server.base_url
    down = f"http://127.0.0.1:{free_port()}"
    providers = [
        {"id": "claude", "type": "remote::anthropic", "config": anthropic_config(url)},
        {
            "id": "badkey",
            "type": "remote::anthropic",
            "config": anthropic_config(url, api_key="sk-ant-wrong-789", models=["m"]),
        },
        {"id": "down", "type": "remote::anthropic", "config": anthropic_config(down, models=["m"], connect_timeout=1)},
    ]
    with serve({"providers": {"inference": providers}}) as served:
        assert requests.get(f"{served}/models", timeout=30).status_code == 200  # discovery done before any fault
        yield served
