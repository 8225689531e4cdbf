"""Requests that do not fit the context, and models this engine cannot run."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from lamina.apis.inference.types import ChatCompletionRequest, CompletionRequest  # noqa: E402
from lamina.config import ConfigError  # noqa: E402
from lamina.errors import LaminaError  # noqa: E402
from lamina_inference_torch.config import TorchConfig  # noqa: E402
from lamina_inference_torch.provider import create_provider  # noqa: E402

MODEL = "tiny-llama"
CONTEXT = 64


@pytest.fixture
async def provider(tiny):
    config = TorchConfig(models=[str(tiny.hf_folder)], quantize="none", context_length=CONTEXT, max_batch=2, threads=1)
    provider = await create_provider(config)
    yield provider
    await provider.close()


def chat(words: int, **kwargs) -> ChatCompletionRequest:
    return ChatCompletionRequest(model=MODEL, messages=[{"role": "user", "content": "fox " * words}], **kwargs)


async def test_prompt_plus_max_tokens_beyond_the_context_is_a_400_naming_the_limits(provider):
    fits = await provider.chat_completion(chat(10, max_tokens=5, temperature=0))
    prompt_tokens = fits["usage"]["prompt_tokens"]
    too_many = CONTEXT - prompt_tokens + 1
    with pytest.raises(LaminaError) as raised:
        await provider.chat_completion(chat(10, max_tokens=too_many, stream=True))
    error = raised.value
    assert error.status == 400 and error.code == "context_length_exceeded" and error.param == "max_tokens"
    assert f"{CONTEXT} tokens" in error.message and f"{prompt_tokens} prompt tokens" in error.message
    assert f"max_tokens {too_many} = {prompt_tokens + too_many}" in error.message
    # A prompt alone longer than the context names the prompt.
    with pytest.raises(LaminaError) as raised:
        await provider.completion(CompletionRequest(model=MODEL, prompt="fox " * 80))
    assert (
        raised.value.status == 400
        and raised.value.param == "messages"
        and "context length is 64" in raised.value.message
    )
    with pytest.raises(LaminaError, match="truncation"):
        await provider.chat_completion(chat(10, truncation="sometimes"))


async def test_truncation_auto_keeps_the_newest_prompt_tokens(provider, tiny):
    answer = await provider.chat_completion(chat(80, max_tokens=8, temperature=0, truncation="auto"))
    assert answer["usage"]["prompt_tokens"] == CONTEXT - 8
    assert 1 <= answer["usage"]["completion_tokens"] <= 8
    completion = await provider.completion(
        CompletionRequest(model=MODEL, prompt="fox " * 80, temperature=0, truncation="auto")
    )
    assert completion["usage"]["prompt_tokens"] == CONTEXT - 16  # the default max_tokens of completions


def write_gpt2_folder(root):
    folder = root / "tiny-gpt2"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}')
    return folder


async def test_an_unsupported_architecture_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as raised:
        await create_provider(TorchConfig(models=[str(write_gpt2_folder(tmp_path))]))
    assert "'gpt2'" in str(raised.value) and "supported: llama" in str(raised.value)


def test_lamina_run_names_an_unsupported_architecture_in_one_line(tmp_path):
    folder = write_gpt2_folder(tmp_path)
    run = tmp_path / "run.yaml"
    run.write_text(
        "providers:\n  inference:\n"
        f"    - {{id: torch, type: 'inline::torch', config: {{models: ['{folder}']}}}}\n"
        f"storage: {{dir: {tmp_path / 'data'}}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", "from lamina.cli import main; main()", "run", str(run), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert "model_type 'gpt2' (GPT2LMHeadModel) is not supported" in errors[0] and "qwen3" in errors[0]
