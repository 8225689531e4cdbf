"""The Responses API over real models in-process, as on the `local` distro: SmolLM2 on torch answers, streams, and
answers after a forced file search over all-MiniLM-L6-v2 embeddings.

(Forced function calls and JSON-schema answers on the torch engine, which grammar-constrained decoding makes
reliable, are checked in plugins/inference-torch/tests/test_grammar.py, through the Responses API too.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from lamina.testing import serve
from openai import OpenAI

SMOLLM2 = os.environ.get("LAMINA_TEST_SMOLLM2")
# Where the suite's servers share converted weights (nox sets it), so only the first start converts the model.
WEIGHT_CACHE = os.environ.get("LAMINA_TEST_WEIGHT_CACHE", True)
MINILM = os.environ.get("LAMINA_TEST_MINILM")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SMOLLM2 and MINILM), reason="set LAMINA_TEST_SMOLLM2 and LAMINA_TEST_MINILM"),
]
MODEL = "torch/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def local() -> Iterator[OpenAI]:
    config = {
        "providers": {
            "inference": [
                {
                    "id": "torch",
                    "type": "inline::torch",
                    "config": {"models": [SMOLLM2], "context_length": 1024, "weight_cache": WEIGHT_CACHE},
                },
                {"id": "st", "type": "inline::sentence-transformers", "config": {"models": [MINILM]}},
            ],
            "files": [{"id": "files", "type": "inline::localfs", "config": {}}],
            "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib", "config": {}}],
            "responses": [{"id": "responses", "type": "inline::responses", "config": {}}],
        },
        "apis": {"vector_io": {"default_embedding_model": f"st/{Path(MINILM or '').name}"}},
    }
    with serve(config) as url:
        yield OpenAI(base_url=url, api_key="unused", max_retries=0)


def test_answers_and_streams(local: OpenAI) -> None:
    response = local.responses.create(model=MODEL, input="Name a colour.", max_output_tokens=8)
    assert response.status in ("completed", "incomplete") and response.output_text
    assert local.responses.retrieve(response.id).output_text == response.output_text
    with local.responses.stream(model=MODEL, input="Say hello.", max_output_tokens=8) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
    assert "".join(deltas)


def test_forced_file_search_answers_from_the_file(local: OpenAI) -> None:
    store = local.vector_stores.create(name="tides")
    uploaded = local.files.create(file=("tides.txt", b"High tide at Saint-Malo is at 06:12."), purpose="assistants")
    assert (
        local.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=uploaded.id).status == "completed"
    )
    found = local.responses.create(
        model=MODEL,
        input="When is high tide at Saint-Malo?",
        tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
        tool_choice={"type": "file_search"},
        include=["file_search_call.results"],
        max_output_tokens=24,
    )
    search, message = found.output
    assert search.type == "file_search_call" and search.results and search.results[0].filename == "tides.txt"
    assert message.type == "message" and message.content[0].text  # type: ignore[union-attr]
    assert [a.filename for a in message.content[0].annotations] == ["tides.txt"]  # type: ignore[union-attr]


def test_truncation_fits_a_long_conversation_into_the_torch_models_window(local: OpenAI) -> None:
    # inline::torch reports its context length (1024 here): eight long turns (~250 tokens each) do not fit.
    said = "The quick brown fox jumps over the lazy dog near the old river bank today. " * 14
    turns = [{"role": role, "content": f"Turn {i}. {said}"} for i in range(8) for role in ("user", "assistant")]
    conversation = local.conversations.create(items=turns)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as caught:
        local.responses.create(model=MODEL, conversation=conversation.id, input="Say hi.", max_output_tokens=4)
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "context_length_exceeded"
    answer = local.responses.create(
        model=MODEL, conversation=conversation.id, input="Say hi.", max_output_tokens=4, truncation="auto"
    )
    assert answer.status in ("completed", "incomplete") and answer.usage is not None
    assert 0 < answer.usage.input_tokens <= 1024  # what the model was given fit its window
