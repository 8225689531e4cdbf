"""`POST /v1alpha/inference/rerank` through remote::rerank, against a fake reranker on 127.0.0.1
(tests/e2e/fake_rerank.py): a real server, real HTTP."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from lamina.config import ConfigError
from lamina.testing import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "e2e"))
from fake_rerank import MODEL, FakeReranker, overlap

DOCUMENTS = [
    "Honey bees make honey from nectar.",
    "The Colosseum is in Rome.",
    "Bees live in a hive with one queen.",
    "Sourdough needs a starter.",
]


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed on return: nothing listens there


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeReranker]:
    with FakeReranker() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def base(fake: FakeReranker) -> Iterator[str]:
    config: dict[str, Any] = {
        "providers": {
            "rerank": [
                {"id": "vllm", "type": "remote::rerank", "config": {"base_url": fake.base_url, "models": [MODEL]}},
                {
                    "id": "down",
                    "type": "remote::rerank",
                    "config": {"base_url": f"http://127.0.0.1:{dead_port()}/v1", "models": [MODEL]},
                },
            ]
        },
        "apis": {"rerank": {"models": {"reranker": f"vllm/{MODEL}"}}},
    }
    with serve(config) as url:
        yield url.removesuffix("/v1") + "/v1alpha"


@pytest.fixture(autouse=True)
def clean(fake: FakeReranker) -> None:
    fake.scoring, fake.status = "overlap", 200
    fake.requests.clear()


def rerank(base: str, **body: Any) -> requests.Response:
    return requests.post(f"{base}/inference/rerank", json=body, timeout=30)


def test_items_come_back_by_relevance(base: str, fake: FakeReranker) -> None:
    query = "where do bees live"
    answer = rerank(base, model=f"vllm/{MODEL}", query=query, items=DOCUMENTS)
    assert answer.status_code == 200, answer.text
    scores = [overlap(query, d) for d in DOCUMENTS]
    expected = sorted(range(len(DOCUMENTS)), key=lambda i: -scores[i])
    assert [r["index"] for r in answer.json()["data"]] == expected
    assert [r["relevance_score"] for r in answer.json()["data"]] == [scores[i] for i in expected]
    assert fake.requests[-1] == {"model": MODEL, "query": query, "documents": DOCUMENTS}  # Jina/Cohere shape


def test_alias_text_parts_and_max_num_results(base: str, fake: FakeReranker) -> None:
    fake.scoring = "reverse"
    answer = rerank(
        base,
        model="reranker",
        query={"type": "text", "text": "anything"},
        items=[*DOCUMENTS[:3], {"type": "text", "text": DOCUMENTS[3]}],
        max_num_results=2,
    )
    assert answer.status_code == 200, answer.text
    assert [r["index"] for r in answer.json()["data"]] == [3, 2]
    assert fake.requests[-1]["top_n"] == 2 and fake.requests[-1]["documents"][3] == DOCUMENTS[3]


def test_models_are_listed(base: str) -> None:
    ids = [m["id"] for m in requests.get(f"{base}/inference/rerank/models", timeout=30).json()["data"]]
    assert ids == ["down/" + MODEL, "reranker", "vllm/" + MODEL]


def test_unknown_model_is_404(base: str) -> None:
    answer = rerank(base, model="vllm/nope", query="q", items=["a"])
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "model_not_found" and "vllm/nope" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": "q", "items": []}, "items"),
        ({"query": "q"}, "items"),
        ({"items": ["a"]}, "query"),
        ({"query": "  ", "items": ["a"]}, "query"),
        ({"query": "q", "items": ["a"], "max_num_results": 0}, "max_num_results"),
        ({"query": "q", "items": [3]}, "items.0"),
    ],
)
def test_bad_input_is_400(base: str, body: dict[str, Any], param: str) -> None:
    answer = rerank(base, model=f"vllm/{MODEL}", **body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_upstream_down_is_503_naming_the_provider(base: str) -> None:
    answer = rerank(base, model=f"down/{MODEL}", query="q", items=["a"])
    assert answer.status_code == 503
    assert answer.json()["error"]["message"].startswith("provider 'down': cannot reach")


def test_upstream_failing_is_503_and_rejection_is_400(base: str, fake: FakeReranker) -> None:
    fake.status = 500
    answer = rerank(base, model=f"vllm/{MODEL}", query="q", items=["a"])
    assert answer.status_code == 503 and "provider 'vllm'" in answer.json()["error"]["message"]
    fake.status = 422
    answer = rerank(base, model=f"vllm/{MODEL}", query="q", items=["a"])
    assert answer.status_code == 400 and "scripted 422" in answer.json()["error"]["message"]


def test_an_alias_to_an_unknown_model_stops_start_up(fake: FakeReranker) -> None:
    config: dict[str, Any] = {
        "providers": {
            "rerank": [
                {"id": "vllm", "type": "remote::rerank", "config": {"base_url": fake.base_url, "models": [MODEL]}}
            ]
        },
        "apis": {"rerank": {"models": {"reranker": "vllm/typo"}}},
    }
    expected = r"apis.rerank.models.reranker: 'vllm/typo' is no model .* known: vllm/"
    with pytest.raises(ConfigError, match=expected), serve(config):
        pass
