"""Fixtures for the Responses tests: a scripted upstream and a real Lamina server with the default orchestrator,
files and vector stores in front of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lamina.testing import serve
from openai import OpenAI
from responses_helpers import responses_config
from scripted_upstream import ScriptedUpstream


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as upstream:
        yield upstream


@pytest.fixture
def upstream(upstream_server: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


@pytest.fixture(scope="session")
def base_url(upstream_server: ScriptedUpstream) -> Iterator[str]:
    with serve(responses_config(upstream_server)) as url:
        yield url


@pytest.fixture
def client(base_url: str, upstream: ScriptedUpstream) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0)
