"""The starter distro's reranker: dormant unless RERANK_URL is set, then `rerank/<RERANK_MODEL>` served by the
upstream's /v1/rerank (the fake of tests/e2e/fake_rerank.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests
from lamina.config import load
from lamina.plugins import distro_specs, make_plugin_manager
from lamina.testing import serve

sys.path.append(str(Path(__file__).resolve().parents[3] / "tests" / "e2e"))

from fake_rerank import MODEL, FakeReranker

RUN_CONFIG = distro_specs(make_plugin_manager())["starter"].run_config


def test_no_reranker_without_rerank_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RERANK_URL", raising=False)
    monkeypatch.delenv("RERANK_MODEL", raising=False)
    assert load(RUN_CONFIG).providers.get("rerank", []) == []


def test_rerank_url_serves_the_upstreams_reranker(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeReranker() as fake:
        monkeypatch.setenv("RERANK_URL", fake.base_url)
        monkeypatch.setenv("RERANK_MODEL", MODEL)
        with serve(RUN_CONFIG) as url:
            alpha = url.removesuffix("/v1") + "/v1alpha"
            listed = requests.get(f"{alpha}/inference/rerank/models", timeout=30).json()
            assert f"rerank/{MODEL}" in [model["id"] for model in listed["data"]]
            answer = requests.post(
                f"{alpha}/inference/rerank",
                json={"model": f"rerank/{MODEL}", "query": "what do bees make", "items": ["rome", "bees make honey"]},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            assert [item["index"] for item in answer.json()["data"]] == [1, 0]
        assert fake.requests and fake.requests[0]["model"] == MODEL
