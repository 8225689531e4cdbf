"""A slow, hanging or leaky upstream: timeouts end in 504s naming the provider, only safe requests are retried,
model discovery never holds a request for long, and the upstream's words never carry our secrets on."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import requests
from e2e_helpers import assert_openai_error
from fake_openai import CHAT_MODEL, FakeOpenAI
from hardening_helpers import SECRET, starter_like
from lamina.testing import serve

CHAT = {"model": f"openai/{CHAT_MODEL}", "messages": [{"role": "user", "content": "hi"}]}
SHORT = {"first_byte_timeout": 0.5, "read_timeout": 0.5, "deadline": 3, "discovery_timeout": 0.5}


@pytest.fixture(scope="module")
def api(fake_server: FakeOpenAI) -> Iterator[str]:
    with serve(starter_like(fake_server, **SHORT)) as url:
        assert requests.get(f"{url}/models", timeout=30).status_code == 200
        yield url


def test_hanging_upstream_is_one_504_and_one_upstream_request(api: str, fake: FakeOpenAI) -> None:
    fake.hang(5, times=1)
    response = requests.post(f"{api}/chat/completions", json=CHAT, timeout=30)
    assert_openai_error(response, 504, type="upstream_error", code="upstream_timeout", message_contains="'openai'")
    assert len(fake.hits("/v1/chat/completions")) == 1  # never sent again: the upstream may be generating


def test_stream_pausing_past_read_timeout_ends_with_an_error_event(api: str, fake: FakeOpenAI) -> None:
    fake.stream_delay = 1.0  # each pause is longer than the 0.5s read_timeout
    response = requests.post(f"{api}/chat/completions", json={**CHAT, "stream": True}, timeout=30)
    assert response.status_code == 200
    assert '"upstream_timeout"' in response.text and "'openai'" in response.text


def test_500_is_not_retried(api: str, fake: FakeOpenAI) -> None:
    fake.fail(500, times=1)
    assert_openai_error(requests.post(f"{api}/chat/completions", json=CHAT), 502, message_contains="'openai'")
    assert len(fake.hits("/v1/chat/completions")) == 1


def test_503_with_retry_after_is_retried(api: str, fake: FakeOpenAI) -> None:
    fake.fail(503, times=1, retry_after="0")
    assert requests.post(f"{api}/chat/completions", json=CHAT).status_code == 200
    assert len(fake.hits("/v1/chat/completions")) == 2


def test_retry_after_beyond_the_deadline_is_not_waited_for(api: str, fake: FakeOpenAI) -> None:
    fake.fail(429, times=1, retry_after="3600")
    assert_openai_error(requests.post(f"{api}/chat/completions", json=CHAT, timeout=30), 429)
    assert len(fake.hits("/v1/chat/completions")) == 1


def test_discovery_of_a_hanging_upstream_holds_no_request(fake: FakeOpenAI) -> None:
    fake.hang(60, times=1)  # the start-up's model listing hangs for a minute
    with serve(starter_like(fake, **SHORT)) as url:
        # Far below the hang: discovery_timeout (0.5s) ends the listing, and requests wait for it no longer.
        listed = requests.get(f"{url}/models", timeout=20)
        assert listed.status_code == 200
        unknown = requests.post(f"{url}/chat/completions", json={**CHAT, "model": "nope"}, timeout=20)
        assert_openai_error(unknown, 404, code="model_not_found")


def test_upstream_error_text_never_carries_the_key(
    api: str, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake.faults.clear()
    # An upstream that echoes the key it was sent, as OpenAI's 401 does ("Incorrect API key provided: sk-...").
    fake.fail(401, times=1)
    fake.echo_key = True
    caplog.set_level(logging.INFO)
    response = requests.post(f"{api}/chat/completions", json=CHAT)
    assert_openai_error(response, 502, message_contains="'openai'")
    assert SECRET not in response.text and "********" in response.text
    assert SECRET not in caplog.text


def test_upstream_codes_are_strings(api: str, fake: FakeOpenAI) -> None:
    fake.fail(404, times=1)
    fake.numeric_code = True
    error = assert_openai_error(requests.post(f"{api}/chat/completions", json=CHAT), 404)
    assert error["code"] == "404"


def test_base_url_with_credentials_and_api_key_fails_start_up(fake: FakeOpenAI) -> None:
    config = starter_like(fake)
    config["providers"]["inference"][0]["config"]["base_url"] = fake.base_url.replace("://", "://bob:pw@")
    with pytest.raises(Exception, match="credentials"), serve(config):
        pass


def test_secret_headers_and_url_passwords_are_masked(fake: FakeOpenAI) -> None:
    config = starter_like(fake, headers={"api-key": "k-1", "X-Api-Key": "k-2", "OpenAI-Organization": "org-3"})
    config["providers"]["inference"][0]["config"].pop("api_key")
    config["providers"]["inference"][0]["config"]["base_url"] = fake.base_url.replace("://", "://bob:hunter2@")
    with serve(config) as url:
        text = requests.get(f"{url}/providers/openai").text
    for secret in ("k-1", "k-2", "org-3", "hunter2"):
        assert secret not in text
    assert "bob:********@" in text
