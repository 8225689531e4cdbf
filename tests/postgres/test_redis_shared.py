"""What replicas share through Redis (`redis.url`), with the real Redis at 127.0.0.1:6379 and the real PostgreSQL
15: a background response cancelled on one replica stops at once on the replica running it, and replicas
configured alike ask an upstream for its model list once. Each test uses keys under a prefix of its own and
deletes them afterwards."""

from __future__ import annotations

import os
import secrets
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from lamina.config import resolve
from lamina.testing import serve
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from fake_openai import CHAT_MODEL, FakeOpenAI

REDIS_URL = os.environ.get("LAMINA_TEST_REDIS", "redis://127.0.0.1:6379/0")
STOP_WAIT_SECONDS = 10.0  # how long a cancelled stream may take to stop; the lease alone would take 20 s here
STREAM_START_WAIT_SECONDS = 30.0  # for the replica running the response to start streaming from the upstream


def unavailable(reason: str) -> None:
    if os.environ.get("LAMINA_REQUIRE_SERVICES"):
        pytest.fail(f"{reason} (LAMINA_REQUIRE_SERVICES is set)")
    pytest.skip(reason)


@pytest.fixture
def redis_settings() -> Iterator[dict[str, str]]:
    """The run config's `redis:` for one test: the shared Redis, and a key prefix no one else uses (its keys are
    deleted at the end)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unavailable(f"no Redis at {REDIS_URL} ({type(exc).__name__}); Redis tests skipped")
    prefix = f"lamina_test_{secrets.token_hex(6)}:"
    try:
        yield {"url": REDIS_URL, "prefix": prefix}
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as upstream:
        yield upstream


def config(fake: FakeOpenAI, data_dir: Path, redis_settings: dict[str, str] | None, **extra: Any) -> dict[str, Any]:
    """A replica: the fake upstream (its models listed from its /v1/models), storage in `extra` or SQLite."""
    inference = {"id": "fake", "type": "remote::openai", "config": {"base_url": fake.base_url, "max_retries": 0}}
    settings: dict[str, Any] = {
        "storage": {"dir": str(data_dir)},
        "providers": {"inference": [inference]},
        **extra,
    }
    if redis_settings is not None:
        settings["redis"] = redis_settings
    return settings


def test_replicas_ask_the_upstream_for_its_models_once(
    fake: FakeOpenAI, redis_settings: dict[str, str], tmp_path: Path
) -> None:
    with (
        serve(config(fake, tmp_path / "a", redis_settings)) as a,
        serve(config(fake, tmp_path / "b", redis_settings)) as b,
    ):
        for url in (a, b):
            listed = {model.id for model in OpenAI(base_url=url, api_key="unused").models.list()}
            assert f"fake/{CHAT_MODEL}" in listed
    assert len(fake.hits("/v1/models")) == 1

    # Without Redis each replica asks for itself: the count above is the cache's doing.
    with serve(config(fake, tmp_path / "c", None)) as c:
        assert f"fake/{CHAT_MODEL}" in {model.id for model in OpenAI(base_url=c, api_key="unused").models.list()}
    assert len(fake.hits("/v1/models")) == 2


def test_a_background_response_cancelled_on_one_replica_stops_on_the_other(
    fake: FakeOpenAI, redis_settings: dict[str, str], postgres_url: str, tmp_path: Path
) -> None:
    fake.stream_delay = 0.2
    storage = {"type": "postgres", "config": {"url": postgres_url, "max_connections": 4}}
    responses = [{"id": "responses", "type": "inline::responses"}]

    def replica(name: str, workers: int) -> dict[str, Any]:
        settings = config(fake, tmp_path / name, redis_settings)
        settings["storage"] = {"dir": str(tmp_path / name), **storage}
        settings["providers"]["responses"] = responses
        # A long lease, so only the cancellation (not a lease renewal) can stop the work in time.
        settings["apis"] = {"responses": {"background_workers": workers, "background_lease_seconds": 60}}
        return settings

    # A runs background responses; B runs none, so the response can only run on A.
    with serve(replica("a", 2)) as url_a, serve(replica("b", 0)) as url_b:
        a, b = OpenAI(base_url=url_a, api_key="unused"), OpenAI(base_url=url_b, api_key="unused")
        long_input = " ".join(f"word{i}" for i in range(400))  # echoed back a word a chunk: 80 s of streaming
        with a.responses.create(model=f"fake/{CHAT_MODEL}", input=long_input, background=True, stream=True) as events:
            response_id = next(iter(events)).response.id  # then the client leaves; the response goes on
        streaming = threading.Event()
        for _ in range(int(STREAM_START_WAIT_SECONDS / 0.1)):
            if fake.hits("/v1/chat/completions"):
                streaming.set()
                break
            threading.Event().wait(0.1)
        assert streaming.is_set(), "the background response never reached the upstream"
        assert a.responses.retrieve(response_id).status == "in_progress"

        cancelled = b.responses.cancel(response_id)
        assert cancelled.status == "cancelled"
        assert fake.disconnected.wait(STOP_WAIT_SECONDS), "the upstream stream went on after the cancellation"
        assert fake.streams_finished == 0
        assert a.responses.retrieve(response_id).status == "cancelled"


def test_rate_limits_count_in_the_shared_redis_unless_told_otherwise() -> None:
    assert resolve({"redis": {"url": REDIS_URL}}, "<test>").auth.quotas.redis_url == REDIS_URL
    own = {"redis": {"url": REDIS_URL}, "auth": {"quotas": {"redis_url": "redis://counters:6379/1"}}}
    assert resolve(own, "<test>").auth.quotas.redis_url == "redis://counters:6379/1"
    assert resolve({}, "<test>").auth.quotas.redis_url is None
