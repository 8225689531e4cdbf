"""Vector-store search with `ranking_options.ranker` naming a reranker model: the best candidates go through the
rerank API (remote::rerank against a fake reranker on 127.0.0.1) and come back in its order, with its scores."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from lamina.testing import serve
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from fake_openai import EMBEDDING_MODEL, FakeOpenAI
from fake_rerank import MODEL, FakeReranker

TEXTS = {
    "a.txt": "Trout swim in the cold mountain lake.",
    "b.md": "# Reeds\nReeds grow along the lake shore.",
    "c.txt": "The lake freezes over in winter.",
    "d.txt": "Herons hunt fish at the edge of the lake.",
    "e.txt": "Boats are rented by the hour on the lake.",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[OpenAI, str, FakeReranker]]:
    with FakeOpenAI() as fake, FakeReranker() as reranker:
        config: dict[str, Any] = {
            "providers": {
                "inference": [
                    {
                        "id": "fake",
                        "type": "remote::openai",
                        "config": {
                            "base_url": fake.base_url,
                            "models": [EMBEDDING_MODEL],
                            "embedding_models": [EMBEDDING_MODEL],
                            "max_retries": 0,
                        },
                    }
                ],
                "files": [{"id": "files", "type": "inline::localfs"}],
                "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib"}],
                "rerank": [
                    {"id": "rr", "type": "remote::rerank", "config": {"base_url": reranker.base_url, "models": [MODEL]}}
                ],
            },
            "apis": {"vector_io": {"default_embedding_model": f"fake/{EMBEDDING_MODEL}"}},
        }
        with serve(config) as url:
            client = OpenAI(base_url=url, api_key="unused", max_retries=0)
            store = client.vector_stores.create(name="lake")
            for name, text in TEXTS.items():
                uploaded = client.files.create(file=(name, text.encode()), purpose="assistants")
                done = client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=uploaded.id)
                assert done.status == "completed", done.last_error
            yield client, store.id, reranker


def search(client: OpenAI, store_id: str, **options: Any) -> list[Any]:
    return list(client.vector_stores.search(vector_store_id=store_id, query="lake", **options).data)


def test_the_reranker_orders_the_candidates(stack: tuple[OpenAI, str, FakeReranker]) -> None:
    client, store_id, reranker = stack
    reranker.scoring = "reverse"  # the candidate the search ranked last comes first
    candidates = [hit.content[0].text for hit in search(client, store_id, max_num_results=20)]
    assert len(candidates) == len(TEXTS)
    hits = search(client, store_id, max_num_results=2, ranking_options={"ranker": f"rr/{MODEL}"})
    assert [hit.content[0].text for hit in hits] == candidates[::-1][:2]
    assert [hit.score for hit in hits] == [1.0, 4 / 5]
    assert reranker.requests[-1]["documents"] == candidates  # the whole pool, in the search's order
    assert reranker.requests[-1]["query"] == "lake" and reranker.requests[-1]["top_n"] == 2


def test_score_threshold_applies_to_the_reranked_scores(stack: tuple[OpenAI, str, FakeReranker]) -> None:
    client, store_id, reranker = stack
    reranker.scoring = "reverse"
    ranking = {"ranker": f"rr/{MODEL}", "score_threshold": 0.7}
    hits = search(client, store_id, max_num_results=5, ranking_options=ranking)
    assert [hit.score for hit in hits] == [1.0, 4 / 5]  # 3/5 and below are cut


def test_openai_rankers_do_not_rerank(stack: tuple[OpenAI, str, FakeReranker]) -> None:
    client, store_id, reranker = stack
    before = len(reranker.requests)
    plain = search(client, store_id, max_num_results=3)
    assert search(client, store_id, max_num_results=3, ranking_options={"ranker": "none"}) == plain
    assert len(reranker.requests) == before


def test_an_unknown_ranker_is_400(stack: tuple[OpenAI, str, FakeReranker]) -> None:
    client, store_id, _ = stack
    answer = requests.post(
        f"{client.base_url}vector_stores/{store_id}/search",
        json={"query": "lake", "ranking_options": {"ranker": "rr/nope"}},
        timeout=30,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "ranking_options.ranker"


def test_a_failing_reranker_fails_the_search_naming_it(stack: tuple[OpenAI, str, FakeReranker]) -> None:
    client, store_id, reranker = stack
    reranker.status = 500
    try:
        answer = requests.post(
            f"{client.base_url}vector_stores/{store_id}/search",
            json={"query": "lake", "ranking_options": {"ranker": f"rr/{MODEL}"}},
            timeout=30,
        )
    finally:
        reranker.status = 200
    assert answer.status_code == 503
    assert answer.json()["error"]["message"].startswith("provider 'rr':")
