"""remote::anthropic, replayed from recordings/remote_anthropic.json: exchanges recorded from Anthropic's
documented wire format (the fake of plugins/remote-anthropic/tests/fake_anthropic.py), so CI needs no key.

Re-record with `LAMINA_RECORDING=record pytest tests/conformance/test_conformance_remote_anthropic.py` (against
the fake), or against Anthropic itself with LAMINA_RECORDING_UPSTREAM=https://api.anthropic.com, ANTHROPIC_API_KEY
and LAMINA_RECORDING_MODEL (e.g. claude-haiku-4-5) set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_anthropic import API_KEY, FakeAnthropic
from lamina.conformance import InferenceConformance, Target
from lamina.recording import Recorder
from lamina.testing import serve

RECORDING = Path(__file__).parent / "recordings" / "remote_anthropic.json"
MODE = os.environ.get("LAMINA_RECORDING", "replay")


def upstream_model() -> str:
    """The model the recording was made with, so that replaying needs no setting."""
    if chosen := os.environ.get("LAMINA_RECORDING_MODEL"):
        return chosen
    if MODE == "replay" and RECORDING.exists():
        exchange = json.loads(RECORDING.read_text())["exchanges"][0]
        model: str = exchange["request"]["body"]["model"]
        return model
    return "claude-fake-1"


@pytest.fixture(scope="module")
def anthropic_upstream() -> Iterator[tuple[str | None, str]]:
    if MODE == "replay":
        yield None, "unused"
    elif os.environ.get("LAMINA_RECORDING_UPSTREAM"):
        yield os.environ["LAMINA_RECORDING_UPSTREAM"], os.environ["ANTHROPIC_API_KEY"]
    else:
        with FakeAnthropic() as fake:
            yield fake.base_url, API_KEY


@pytest.fixture(scope="module")
def target(anthropic_upstream: tuple[str | None, str]) -> Iterator[Target]:
    url, key = anthropic_upstream
    model = upstream_model()
    with Recorder(RECORDING, upstream=url, match_headers=("anthropic-version",)) as recorder:
        config = {"base_url": recorder.url, "api_key": key, "models": [model], "max_retries": 0}
        provider = {"id": "claude", "type": "remote::anthropic", "config": config}
        with serve({"providers": {"inference": [provider]}}) as base_url:
            yield Target(base_url=base_url, model=f"claude/{model}", tools=True, seed=None)


class TestRemoteAnthropic(InferenceConformance):
    pass
