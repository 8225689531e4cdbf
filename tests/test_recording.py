"""lamina.recording: record an upstream's exchanges, replay them with no upstream, fail clearly when a recording
is missing or stale. The upstream is the fake OpenAI server; the client is plain urllib."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lamina.recording import Recorder, RecordingError

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

from fake_openai import FakeOpenAI

SECRET = "sk-recording-secret-1"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as upstream:
        yield upstream


def post(root: str, body: dict[str, Any], **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{root}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-fake", "messages": [{"role": "user", "content": text}], **extra}


def test_record_then_replay_without_the_upstream(fake: FakeOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "rec.json"
    with Recorder(path, upstream=fake.base_url.removesuffix("/v1"), mode="record", ignore=("user",)) as recorder:
        plain = post(recorder.url, chat("hello", user="u-1"))
        streamed = post(recorder.url, chat("stream me", stream=True))
    assert plain[0] == 200 and json.loads(plain[1])["choices"][0]["message"]["content"] == "echo: hello"
    assert streamed[1].count("data: ") == 6  # role, 3 words, finish, [DONE]
    saved = path.read_text()
    assert SECRET not in saved  # request headers are not kept
    exchanges = json.loads(saved)["exchanges"]
    assert exchanges[0]["request"]["body"] == chat("hello")  # ignored fields are dropped
    assert exchanges[0]["request"]["headers"] == {}
    assert exchanges[1]["response"]["events"][-1] == "data: [DONE]"
    fake.reset()
    with Recorder(path, mode="replay", ignore=("user",)) as recorder:
        replayed = post(recorder.url, chat("hello", user="someone else"))
        assert (replayed[0], json.loads(replayed[1])) == (plain[0], json.loads(plain[1]))
        assert post(recorder.url, chat("stream me", stream=True)) == streamed
    assert fake.requests == []


def test_upstream_errors_are_recorded_too(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.reset()
    fake.fail(503, times=1)
    with Recorder(tmp_path / "e.json", upstream=fake.base_url.removesuffix("/v1"), mode="record") as recorder:
        failed = post(recorder.url, chat("x"))
    fake.reset()
    assert failed[0] == 503
    with Recorder(tmp_path / "e.json", mode="replay") as recorder:
        replayed = post(recorder.url, chat("x"))
    assert (replayed[0], json.loads(replayed[1])) == (failed[0], json.loads(failed[1]))


def test_a_missing_recording_fails_saying_how_to_record(tmp_path: Path) -> None:
    with (
        pytest.raises(RecordingError, match=r"no recording .*LAMINA_RECORDING=record"),
        Recorder(tmp_path / "none.json", mode="replay") as recorder,
    ):
        status, body = post(recorder.url, chat("x"))
        assert status == 500 and "LAMINA_RECORDING=record" in body


def test_a_stale_recording_fails_naming_what_changed(fake: FakeOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "stale.json"
    with Recorder(path, upstream=fake.base_url.removesuffix("/v1"), mode="record") as recorder:
        post(recorder.url, chat("hello", temperature=0.5))
    with pytest.raises(RecordingError) as error, Recorder(path, mode="replay") as recorder:
        post(recorder.url, chat("hello", temperature=0.7))
    assert "stale recording" in str(error.value)
    assert "body.temperature: recorded 0.5, sent 0.7" in str(error.value)
    assert "LAMINA_RECORDING=record" in str(error.value)
    with pytest.raises(RecordingError, match="no \\(further\\) exchange"), Recorder(path, mode="replay") as recorder:
        post(recorder.url, chat("hello", temperature=0.5))
        post(recorder.url, chat("hello", temperature=0.5))  # recorded once, asked twice


def test_live_forwards_and_writes_nothing(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.reset()
    with Recorder(tmp_path / "live.json", upstream=fake.base_url.removesuffix("/v1"), mode="live") as recorder:
        assert post(recorder.url, chat("hi"))[0] == 200
    assert len(fake.requests) == 1 and fake.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert not (tmp_path / "live.json").exists()


def test_modes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAMINA_RECORDING", "replya")
    with pytest.raises(ValueError, match="replay, record, live"):
        Recorder(tmp_path / "x.json")
    monkeypatch.setenv("LAMINA_RECORDING", "record")
    with pytest.raises(ValueError, match="upstream"):
        Recorder(tmp_path / "x.json")
