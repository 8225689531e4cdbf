"""Vector-store search with `rewrite_query: true`: the configured chat model rewrites the query (through the fake
upstream, which echoes its prompt), and the search embeds the rewritten query, not the one asked."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from e2e_helpers import assert_openai_error
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI
from lamina.apis.vector_io.types import REWRITE_PROMPT
from lamina.testing import serve
from openai import OpenAI

QUERY = "french capital"


def vector_config(fake: FakeOpenAI, **vector_io: Any) -> dict[str, Any]:
    upstream = {"base_url": fake.base_url, "max_retries": 0, "embedding_models": [EMBEDDING_MODEL]}
    return {
        "providers": {
            "inference": [{"id": "fake", "type": "remote::openai", "config": upstream}],
            "files": [{"id": "files", "type": "inline::localfs", "config": {}}],
            "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib", "config": {}}],
        },
        "apis": {"vector_io": {"default_embedding_model": f"fake/{EMBEDDING_MODEL}", **vector_io}},
    }


@pytest.fixture(scope="module")
def rewriting(fake_server: FakeOpenAI) -> Iterator[str]:
    with serve(vector_config(fake_server, query_rewrite={"model": f"fake/{CHAT_MODEL}"})) as url:
        yield url


def store_with_a_file(url: str) -> str:
    client = OpenAI(base_url=url, api_key="unused", max_retries=0)
    store = client.vector_stores.create(name="docs")
    upload = ("paris.txt", io.BytesIO(b"Paris is the capital and largest city of France."))
    attached = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=upload)
    assert attached.status == "completed", attached.last_error
    return store.id


def search(url: str, store_id: str, **body: Any) -> requests.Response:
    return requests.post(f"{url}/vector_stores/{store_id}/search", json={"query": QUERY, **body}, timeout=30)


def test_rewrite_query_searches_with_the_models_rewrite(rewriting: str, fake: FakeOpenAI) -> None:
    store_id = store_with_a_file(rewriting)
    fake.reset()
    answer = search(rewriting, store_id, rewrite_query=True)
    assert answer.status_code == 200, answer.text
    [asked] = fake.hits("/v1/chat/completions")
    prompt = REWRITE_PROMPT.replace("{query}", QUERY)
    assert asked["body"]["model"] == CHAT_MODEL and asked["body"]["temperature"] == 0
    assert asked["body"]["messages"] == [{"role": "user", "content": prompt}]
    rewritten = " ".join(f"echo: {prompt}".split())  # the fake model's answer, on one line
    [embedded] = fake.hits("/v1/embeddings")
    assert embedded["body"]["input"] == [rewritten], "the search embeds the rewritten query"
    assert answer.json()["search_query"] == rewritten


def test_without_rewrite_query_no_model_is_asked(rewriting: str, fake: FakeOpenAI) -> None:
    store_id = store_with_a_file(rewriting)
    fake.reset()
    answer = search(rewriting, store_id)
    assert answer.status_code == 200, answer.text
    assert fake.hits("/v1/chat/completions") == []
    assert [hit["body"]["input"] for hit in fake.hits("/v1/embeddings")] == [[QUERY]]
    assert answer.json()["search_query"] == QUERY


def test_rewrite_query_without_a_configured_model_is_a_400(fake_server: FakeOpenAI) -> None:
    with serve(vector_config(fake_server)) as url:
        store_id = store_with_a_file(url)
        refused = search(url, store_id, rewrite_query=True)
        assert_openai_error(refused, 400, param="rewrite_query")
        assert "apis.vector_io.query_rewrite.model" in refused.json()["error"]["message"]
        assert search(url, store_id).status_code == 200
