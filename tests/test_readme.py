"""README's Python snippets run as printed, each in a fresh interpreter, against a real Lamina in front of the fake
upstream. The one substitution: "Use it" talks to `lamina run local` at http://127.0.0.1:8321/v1, and the test's
server listens on another port, so that URL is replaced by the test server's. The local distro's model ids the
snippet names are served there as aliases of the fake upstream's models; the library snippet reads the upstream
from OPENAI_BASE_URL, as README says to run it, and the fake serves the model it names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lamina.testing import serve

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))  # the fake upstream, shared with the end-to-end tests

from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI  # noqa: E402

README_URL = "http://127.0.0.1:8321/v1"


def snippets() -> dict[str, str]:
    """README's Python blocks, by the section they are in."""
    found: dict[str, str] = {}
    section = ""
    for match in re.finditer(
        r"^## (?P<title>[^\n]+)$|^```python\n(?P<code>.*?)^```$",
        (ROOT / "README.md").read_text(),
        re.MULTILINE | re.DOTALL,
    ):
        if match["title"]:
            section = match["title"]
        else:
            assert section not in found, f"two Python blocks under '{section}': give this test the second"
            found[section] = match["code"]
    return found


def run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "VLLM_", "OLLAMA_", "LLAMACPP_"))}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**clean, **env}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as upstream:
        yield upstream


def test_readme_has_the_snippets_this_test_runs() -> None:
    assert sorted(snippets()) == ["Use it", "Use it as a library"]


def test_use_it(fake: FakeOpenAI) -> None:
    code = snippets()["Use it"]
    assert code.count(README_URL) == 1
    config = {
        "providers": {"inference": [{"id": "up", "type": "remote::openai", "config": {"base_url": fake.base_url}}]},
        "apis": {
            "inference": {
                "models": [
                    {"id": "torch/SmolLM2-135M-Instruct", "provider_id": "up", "provider_model_id": CHAT_MODEL},
                    {
                        "id": "sentence-transformers/all-MiniLM-L6-v2",
                        "provider_id": "up",
                        "provider_model_id": EMBEDDING_MODEL,
                        "model_type": "embedding",
                    },
                ]
            }
        },
    }
    with serve(config) as url:
        printed = run(code.replace(README_URL, url)).splitlines()
    assert "'torch/SmolLM2-135M-Instruct'" in printed[0] and "'sentence-transformers/all-MiniLM-L6-v2'" in printed[0]
    assert printed[1:] == ["echo: Name three colours.", "8"]  # the fake's reply, and its embeddings' length


def test_use_it_as_a_library(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.models = [*fake.models, "gpt-4o-mini"]  # the upstream serves the model the snippet names
    printed = run(snippets()["Use it as a library"], OPENAI_BASE_URL=fake.base_url, LAMINA_HOME=str(tmp_path))
    models, reply = printed.splitlines()
    assert "'openai/gpt-4o-mini'" in models
    assert reply == "echo: Name three colours."
    assert fake.hits("/v1/chat/completions")[-1]["body"]["model"] == "gpt-4o-mini"
