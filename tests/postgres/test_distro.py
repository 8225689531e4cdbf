"""`lamina run postgres` (the distro's own run.yaml) against the PostgreSQL at 127.0.0.1:5432, configured by
POSTGRES_URL, with a fake OpenAI upstream on 127.0.0.1: chat through it, the rules shield, files in Postgres."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests
from lamina.testing import serve
from openai import OpenAI
from test_replicas import fetch_value

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from fake_openai import CHAT_MODEL, FakeOpenAI


def test_the_postgres_distro_runs_on_postgres(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with FakeOpenAI() as fake:
        monkeypatch.setenv("POSTGRES_URL", postgres_url)
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
        for variable in ("EMBEDDING_MODEL", "VLLM_URL", "OLLAMA_URL", "LLAMACPP_URL"):
            monkeypatch.delenv(variable, raising=False)
        with serve("postgres") as url:
            client = OpenAI(base_url=url, api_key="unused", max_retries=0)
            answer = client.chat.completions.create(
                model=f"openai/{CHAT_MODEL}", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer.choices[0].message.content == "echo: hi"
            shields = requests.get(url + "/shields", timeout=10).json()["data"]
            assert [s["id"] for s in shields] == ["rules"]
            uploaded = client.files.create(file=("x.txt", b"stored in postgres"), purpose="assistants")
            storage = requests.get(url + "/providers/files", timeout=10).json()
            assert storage["provider_type"] == "remote::postgres"
            response = client.responses.create(model=f"openai/{CHAT_MODEL}", input="kept")
            assert response.output_text == "echo: kept"
            assert client.responses.retrieve(response.id).status == "completed"
    assert fetch_value(postgres_url, "SELECT bytes FROM lamina_files_stored WHERE file_id = $1", uploaded.id) == 18
    assert fetch_value(postgres_url, "SELECT count(*) FROM lamina_kv WHERE key LIKE 'files/%'") == 1
    stored_responses = "SELECT count(*) FROM lamina_kv WHERE key LIKE '%' || $1 || '%'"
    assert fetch_value(postgres_url, stored_responses, response.id) >= 1
