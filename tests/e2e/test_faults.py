"""Bad input and upstream faults: each answers with the right status and OpenAI's error body, and the server
stays healthy afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest
import requests
from e2e_helpers import assert_healthy, assert_openai_error
from fake_openai import CHAT_MODEL, FakeOpenAI

MODEL = f"fake/{CHAT_MODEL}"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def api(base_url: str) -> Iterator[str]:
    yield base_url
    assert_healthy(base_url)


def post(url: str, path: str, json: object = None, data: bytes | None = None) -> requests.Response:
    return requests.post(
        f"{url}{path}",
        json=json,
        data=data,
        timeout=30,
        headers={"Content-Type": "application/json"} if data is not None else None,
    )


# -- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"{not json", b'{"model": "x", "messages": [', b"", b"\xff\xfe"])
def test_malformed_json_is_400(api: str, data: bytes, fake: FakeOpenAI) -> None:
    assert_openai_error(
        post(api, "/chat/completions", data=data), 400, type="invalid_request_error", code="invalid_json"
    )
    assert fake.hits("/v1/chat/completions") == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "messages": HI, "temperature": "hot"}, "temperature"),
        ({"model": MODEL, "messages": "hello"}, "messages"),
        ({"model": MODEL, "messages": HI, "n": 0}, "n"),
        ({"model": MODEL, "messages": HI, "stream": "yes"}, "stream"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": 7, "messages": HI}, "model"),
    ],
)
def test_wrong_types_are_400_naming_the_field(api: str, body: dict, param: str, fake: FakeOpenAI) -> None:
    error = assert_openai_error(
        post(api, "/chat/completions", body), 400, type="invalid_request_error", param=param, code="invalid_value"
    )
    assert error["message"].startswith(param)
    assert fake.hits("/v1/chat/completions") == []


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/chat/completions", {"messages": HI}, "model"),
        ("/chat/completions", {"model": MODEL}, "messages"),
        ("/embeddings", {"model": "fake/text-embedding-fake"}, "input"),
        ("/completions", {"model": MODEL}, "prompt"),
    ],
)
def test_missing_fields_are_400(api: str, path: str, body: dict, param: str) -> None:
    assert_openai_error(post(api, path, body), 400, param=param, code="missing_required_parameter")


def test_unknown_model_is_404(api: str, fake: FakeOpenAI) -> None:
    assert_openai_error(
        post(api, "/chat/completions", {"model": "no-such-model", "messages": HI}),
        404,
        type="not_found_error",
        param="model",
        code="model_not_found",
        message_contains="no-such-model",
    )
    assert fake.hits("/v1/chat/completions") == []


def test_unknown_route_is_404(api: str) -> None:
    assert_openai_error(
        requests.get(f"{api}/nowhere", timeout=10), 404, type="not_found_error", message_contains="/v1/nowhere"
    )
    assert_openai_error(requests.get(api.removesuffix("/v1") + "/chat/completions", timeout=10), 404)


def test_wrong_method_is_405(api: str) -> None:
    assert_openai_error(requests.get(f"{api}/embeddings", timeout=10), 405)


# -- upstream faults -------------------------------------------------------------------------------------


def test_upstream_refusing_connections_is_503_naming_provider(api: str) -> None:
    started = time.monotonic()
    assert_openai_error(
        post(api, "/chat/completions", {"model": "down/any-model", "messages": HI}),
        503,
        type="upstream_error",
        message_contains=["provider 'down'", "cannot reach"],
    )
    assert time.monotonic() - started < 5


def test_upstream_500_is_502_and_not_retried(api: str, fake: FakeOpenAI) -> None:
    fake.fail(500)
    assert_openai_error(
        post(api, "/chat/completions", {"model": MODEL, "messages": HI}),
        502,
        type="upstream_error",
        code="upstream_error",
        message_contains=["provider 'fake'", "500", "scripted failure 500"],
    )
    # The upstream got the request and failed it: sending it again could run (and bill) it twice.
    assert len(fake.hits("/v1/chat/completions")) == 1
    fake.reset()
    assert post(api, "/chat/completions", {"model": MODEL, "messages": HI}).status_code == 200


def test_upstream_503_then_success_is_200(api: str, fake: FakeOpenAI) -> None:
    fake.fail(503, times=2)
    response = post(api, "/chat/completions", {"model": MODEL, "messages": HI})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert len(fake.hits("/v1/chat/completions")) == 3


def test_upstream_500_before_stream_retried(api: str, fake: FakeOpenAI) -> None:
    fake.fail(503, times=1)
    response = post(api, "/chat/completions", {"model": MODEL, "messages": HI, "stream": True})
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n") and '"echo:"' in response.text
    assert len(fake.hits("/v1/chat/completions")) == 2


def test_upstream_429_retry_after_is_honoured(api: str, fake: FakeOpenAI) -> None:
    fake.fail(429, times=1, retry_after="1")
    started = time.monotonic()
    response = post(api, "/chat/completions", {"model": MODEL, "messages": HI})
    assert response.status_code == 200, response.text
    first, second = fake.hits("/v1/chat/completions")
    assert second["time"] - first["time"] >= 0.95  # not the 0.01s backoff of this provider
    assert time.monotonic() - started < 5


def test_upstream_429_every_time_is_429(api: str, fake: FakeOpenAI) -> None:
    fake.fail(429, retry_after="0")
    assert_openai_error(
        post(api, "/chat/completions", {"model": MODEL, "messages": HI}),
        429,
        type="rate_limit_error",
        code="rate_limit_exceeded",
        message_contains="provider 'fake'",
    )


def test_upstream_4xx_passed_on(api: str, fake: FakeOpenAI) -> None:
    fake.fail(400, times=1)
    assert_openai_error(
        post(api, "/chat/completions", {"model": MODEL, "messages": HI}),
        400,
        message_contains=["provider 'fake'", "scripted failure 400"],
    )
    assert len(fake.hits("/v1/chat/completions")) == 1  # a 4xx is the request's fault: never retried


def test_upstream_hanging_is_504(api: str, fake: FakeOpenAI) -> None:
    fake.hang(3, times=1)
    started = time.monotonic()
    assert_openai_error(
        post(api, "/chat/completions", {"model": f"slow/{CHAT_MODEL}", "messages": HI}),
        504,
        type="upstream_error",
        code="upstream_timeout",
        message_contains="provider 'slow'",
    )
    assert time.monotonic() - started < 2.5  # the 0.5s read timeout, not the 3s hang


def test_upstream_closing_connection_is_503_and_not_retried(api: str, fake: FakeOpenAI) -> None:
    fake.drop(times=1)
    assert_openai_error(
        post(api, "/chat/completions", {"model": MODEL, "messages": HI}),
        503,
        type="upstream_error",
        message_contains="provider 'fake'",
    )
    assert len(fake.hits("/v1/chat/completions")) == 1  # it may have been received: never sent twice
    assert post(api, "/chat/completions", {"model": MODEL, "messages": HI}).status_code == 200


async def test_client_disconnect_cancels_upstream_request(api: str, fake: FakeOpenAI) -> None:
    fake.stream_delay = 0.2
    body = {"model": MODEL, "messages": [{"role": "user", "content": " ".join(["word"] * 100)}], "stream": True}
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{api}/chat/completions", json=body)
        assert response.status == 200
        first = await response.content.readline()
        assert first.startswith(b"data: ")
        response.close()  # the client goes away mid-stream
    started = time.monotonic()
    seen = await asyncio.to_thread(fake.disconnected.wait, 2.0)
    assert seen, "the upstream request was still running 2s after the client went away"
    print(f"upstream saw the disconnect after {time.monotonic() - started:.2f}s")
    assert fake.streams_finished == 0
