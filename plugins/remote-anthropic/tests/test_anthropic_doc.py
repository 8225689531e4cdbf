"""docs/anthropic.md's Python blocks run as printed, each in a fresh interpreter, against a real Lamina: the
`local` distro's chat model id is an alias of the fake OpenAI upstream's model, and `anthropic/...` is
remote::anthropic in front of the fake Anthropic API. The one substitution: the server's address."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_anthropic import API_KEY, FakeAnthropic
from lamina.testing import serve

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from fake_openai import CHAT_MODEL, FakeOpenAI  # noqa: E402

DOC_ROOT = "http://127.0.0.1:8321"


def python_blocks() -> list[str]:
    text = (ROOT / "docs" / "anthropic.md").read_text()
    return [match[1] for match in re.finditer(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)]


@pytest.fixture(scope="module")
def server_root() -> Iterator[str]:
    with FakeOpenAI() as openai_upstream, FakeAnthropic() as anthropic_upstream:
        anthropic_config = {
            "base_url": anthropic_upstream.base_url,
            "api_key": API_KEY,
            "models": ["claude-sonnet-4-5"],
        }
        config = {
            "providers": {
                "inference": [
                    {"id": "up", "type": "remote::openai", "config": {"base_url": openai_upstream.base_url}},
                    {"id": "anthropic", "type": "remote::anthropic", "config": anthropic_config},
                ]
            },
            "apis": {
                "inference": {
                    "models": [
                        {"id": "torch/SmolLM2-135M-Instruct", "provider_id": "up", "provider_model_id": CHAT_MODEL}
                    ]
                }
            },
        }
        with serve(config) as url:
            yield url.removesuffix("/v1")


def run(code: str, server_root: str) -> str:
    assert DOC_ROOT in code
    result = subprocess.run(
        [sys.executable, "-c", code.replace(DOC_ROOT, server_root)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_doc_has_the_blocks_this_test_runs() -> None:
    assert len(python_blocks()) == 2


def test_in_the_anthropic_sdk_in_front_of_a_model(server_root: str) -> None:
    printed = run(python_blocks()[0], server_root).splitlines()
    assert printed[0] == "echo: What is the capital of France? end_turn 7"
    assert printed[1] == "echo: Say hello."
    assert printed[2] == "MessageTokensCount(input_tokens=2)"


def test_out_an_openai_client_talking_to_claude(server_root: str) -> None:
    printed = run(python_blocks()[1], server_root).splitlines()
    assert printed[0].startswith("echo: Name three colours. stop ")
