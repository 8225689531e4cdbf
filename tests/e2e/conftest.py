"""Fixtures for end-to-end tests: a scripted fake OpenAI upstream and a real Lamina server in front of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from e2e_helpers import gateway_config
from fake_openai import FakeOpenAI
from lamina.testing import serve


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The shared fake upstream, with a clean script and record for each test."""
    fake_server.reset()
    yield fake_server
    fake_server.reset()


@pytest.fixture(scope="session")
def base_url(fake_server: FakeOpenAI) -> Iterator[str]:
    """A Lamina server shared by the tests that do not restart it; ends in /v1."""
    with serve(gateway_config(fake_server)) as url:
        # Listing waits for model discovery, so no test's scripted fault can hit discovery's requests.
        assert requests.get(f"{url}/models", timeout=30).status_code == 200
        yield url
