"""The Messages API is tested through a real Lamina server in front of the fake OpenAI upstream of the end-to-end
tests (tests/e2e/fake_openai.py), with the official `anthropic` client."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "e2e"))

from e2e_helpers import gateway_config
from fake_openai import FakeOpenAI
from lamina.testing import serve


@pytest.fixture(scope="module")
def fake_module_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def upstream(fake_module_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    fake_module_server.reset()
    yield fake_module_server
    fake_module_server.reset()


@pytest.fixture(scope="module")
def server_root(fake_module_server: FakeOpenAI) -> Iterator[str]:
    """The root of a Lamina server (no /v1: the anthropic SDK adds it)."""
    with serve(gateway_config(fake_module_server)) as url:
        assert requests.get(f"{url}/models", timeout=30).status_code == 200  # discovery done before any fault
        yield url.removesuffix("/v1")
