"""The adapter is tested against the same scripted fake upstream as the end-to-end tests (tests/e2e/fake_openai.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "e2e"))

from fake_openai import FakeOpenAI


@pytest.fixture(scope="module")
def fake_module_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def upstream(fake_module_server: FakeOpenAI) -> FakeOpenAI:
    fake_module_server.reset()
    return fake_module_server
