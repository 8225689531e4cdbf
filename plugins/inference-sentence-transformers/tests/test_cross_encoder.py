"""inline::cross-encoder behind `POST /v1alpha/inference/rerank`, with a tiny random BERT cross-encoder built in the
test (no reranker model is available offline): the server's ranking must be the CrossEncoder's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from lamina.testing import serve

ITEMS = ["bees make honey", "rome has a colosseum", "the lake freezes", "trout swim upstream", "honey is sweet"]
QUERY = "what do bees make"


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-reranker")
    words = sorted({w for text in [*ITEMS, QUERY] for w in text.split()})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(7)
    config = BertConfig(
        vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        num_labels=1, max_position_embeddings=64,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def base(tiny_reranker: Path) -> Iterator[str]:
    config = {
        "providers": {
            "rerank": [{"id": "ce", "type": "inline::cross-encoder", "config": {"models": [str(tiny_reranker)]}}]
        }
    }
    with serve(config) as url:
        yield url.removesuffix("/v1") + "/v1alpha"


def test_the_ranking_is_the_cross_encoders(base: str, tiny_reranker: Path) -> None:
    from sentence_transformers import CrossEncoder

    expected = [float(s) for s in CrossEncoder(str(tiny_reranker)).predict([(QUERY, item) for item in ITEMS])]
    order = sorted(range(len(ITEMS)), key=lambda i: -expected[i])
    answer = requests.post(
        f"{base}/inference/rerank",
        json={"model": f"ce/{tiny_reranker.name}", "query": QUERY, "items": ITEMS, "max_num_results": 3},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert [r["index"] for r in data] == order[:3]
    assert [r["relevance_score"] for r in data] == pytest.approx([expected[i] for i in order[:3]], abs=1e-5)
    assert all(0 < r["relevance_score"] < 1 for r in data)


def test_a_model_that_cannot_load_is_503(tmp_path: Path) -> None:
    broken = tmp_path / "broken-reranker"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    config = {
        "providers": {"rerank": [{"id": "ce", "type": "inline::cross-encoder", "config": {"models": [str(broken)]}}]}
    }
    with serve(config) as url:
        answer = requests.post(
            url.removesuffix("/v1") + "/v1alpha/inference/rerank",
            json={"model": "ce/broken-reranker", "query": "q", "items": ["a"]},
            timeout=120,
        )
    assert answer.status_code == 503
    assert answer.json()["error"]["message"].startswith(
        "provider 'ce': could not load reranker model 'broken-reranker'"
    )
