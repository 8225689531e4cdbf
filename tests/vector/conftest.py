"""Fixtures for vector store tests: the real all-MiniLM-L6-v2 (LAMINA_TEST_MINILM) behind a real server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lamina.testing import serve
from openai import OpenAI
from vector_helpers import CORPUS, vector_config


@pytest.fixture(scope="session")
def minilm() -> str:
    path = os.environ.get("LAMINA_TEST_MINILM")
    if not path:
        pytest.skip("LAMINA_TEST_MINILM is not set (folder of all-MiniLM-L6-v2); vector store tests need it")
    if not Path(path).is_dir():
        pytest.skip(f"LAMINA_TEST_MINILM={path} is not a folder")
    return path


@pytest.fixture(scope="module")
def base_url(minilm: str) -> Iterator[str]:
    with serve(vector_config(minilm)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def corpus_store(client: OpenAI) -> Any:
    """A vector store holding the whole corpus, each file with its attributes."""
    store = client.vector_stores.create(name="corpus")
    for name, (text, attributes) in CORPUS.items():
        uploaded = client.files.create(file=(name, text.encode()), purpose="assistants")
        done = client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=uploaded.id, attributes=attributes
        )
        assert done.status == "completed", done.last_error
    return client.vector_stores.retrieve(store.id)
