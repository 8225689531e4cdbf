"""The local distro's reranker: dormant unless LAMINA_RERANK_MODEL is set, then that cross-encoder served in
process. No reranker model is available offline, so the test builds a tiny random BERT cross-encoder (as
plugins/inference-sentence-transformers' tests do) and checks the distro's entry serves its ranking."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from lamina.config import load
from lamina.plugins import distro_specs, make_plugin_manager
from lamina.testing import serve

ITEMS = ["bees make honey", "rome has a colosseum", "honey is sweet"]
QUERY = "what do bees make"
RUN_CONFIG = distro_specs(make_plugin_manager())["local"].run_config


def tiny_cross_encoder(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = sorted({w for text in [*ITEMS, QUERY] for w in text.split()})
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(7)
    config = BertConfig(
        vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        num_labels=1, max_position_embeddings=64,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_no_reranker_without_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMINA_RERANK_MODEL", raising=False)
    assert load(RUN_CONFIG).providers.get("rerank", []) == []


def test_lamina_rerank_model_serves_that_cross_encoder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    model = tiny_cross_encoder(tmp_path / "tiny-reranker")
    monkeypatch.setenv("LAMINA_RERANK_MODEL", str(model))
    [entry] = load(RUN_CONFIG).providers["rerank"]
    assert (entry.id, entry.type, entry.config) == ("cross-encoder", "inline::cross-encoder", {"models": [str(model)]})
    # The distro's rerank entry alone: its chat and embedding models would be pulled from wheels to start it whole.
    rerank_only = {"providers": {"rerank": [entry.model_dump()]}}
    with serve(rerank_only) as url:
        answer = requests.post(
            url.removesuffix("/v1") + "/v1alpha/inference/rerank",
            json={"model": "cross-encoder/tiny-reranker", "query": QUERY, "items": ITEMS},
            timeout=120,
        )
    assert answer.status_code == 200, answer.text
    expected = [float(s) for s in CrossEncoder(str(model)).predict([(QUERY, item) for item in ITEMS])]
    assert [item["index"] for item in answer.json()["data"]] == sorted(range(len(ITEMS)), key=lambda i: -expected[i])
