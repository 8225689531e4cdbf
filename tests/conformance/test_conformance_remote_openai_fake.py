"""remote::openai in front of the fake OpenAI upstream (tests/e2e/fake_openai.py): chat, streams, tool calls and
embeddings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI
from lamina.conformance import InferenceConformance, Target
from lamina.testing import serve


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with FakeOpenAI() as fake:
        config = {"base_url": fake.base_url, "api_key": "sk-fake", "embedding_models": [EMBEDDING_MODEL]}
        provider = {"id": "up", "type": "remote::openai", "config": config}
        with serve({"providers": {"inference": [provider]}}) as base_url:
            yield Target(
                base_url=base_url, model=f"up/{CHAT_MODEL}", tools=True, embedding_model=f"up/{EMBEDDING_MODEL}"
            )


class TestRemoteOpenAIOnTheFakeUpstream(InferenceConformance):
    pass
