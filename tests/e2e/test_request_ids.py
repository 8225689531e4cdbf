"""Request ids, the per-request JSON log line and the observability seam, in core alone (the telemetry plugin is
left out of these servers: none of this needs it)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml
from e2e_helpers import assert_openai_error
from fake_openai import CHAT_MODEL, FakeOpenAI, free_port
from lamina import observe
from lamina.config import RunConfig
from lamina.hookspecs import hookimpl
from lamina.plugins import make_plugin_manager
from lamina.specs import ProviderSpec
from lamina.testing import serve
from test_cli import LAMINA

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def core_only() -> Any:
    pm = make_plugin_manager()
    if pm.get_plugin("telemetry") is not None:
        pm.unregister(name="telemetry")
    return pm


def gateway(fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "providers": {
            "inference": [
                {
                    "id": "up",
                    "type": "remote::openai",
                    "config": {"base_url": fake.base_url, "models": [CHAT_MODEL], "max_retries": 0},
                }
            ]
        }
    }


def chat(base_url: str, content: str, headers: Mapping[str, str] | None = None, **extra: Any) -> requests.Response:
    body = {"model": f"up/{CHAT_MODEL}", "messages": [{"role": "user", "content": content}], **extra}
    return requests.post(base_url + "/chat/completions", json=body, headers=headers, timeout=30)


def test_request_ids_are_taken_from_the_client_or_made_and_always_returned(fake: FakeOpenAI) -> None:
    with serve(gateway(fake), pm=core_only()) as base_url:
        assert chat(base_url, "hi", {"X-Request-ID": "client-id.42"}).headers["x-request-id"] == "client-id.42"
        made = chat(base_url, "hi").headers["x-request-id"]
        assert HEX_ID.match(made)
        assert chat(base_url, "hi").headers["x-request-id"] != made
        # Not a token a log could hold safely (spaces, too long): replaced by one of ours.
        for unsafe in ("two words", "x" * 200):
            assert HEX_ID.match(chat(base_url, "hi", {"X-Request-ID": unsafe}).headers["x-request-id"])
        # Errors carry the id in their body too, so a user's report can be found in the logs.
        missing = requests.post(
            base_url + "/chat/completions",
            json={"model": "up/nope-404", "messages": []},
            headers={"X-Request-ID": "report-me"},
            timeout=30,
        )
        error = assert_openai_error(missing, 400)
        assert error["request_id"] == "report-me" and "trace_id" not in error
        unrouted = requests.get(base_url + "/no/such/route", timeout=30)
        assert_openai_error(unrouted, 404)


def test_json_logs_have_one_line_per_request_with_its_ids_and_usage(tmp_path: Path, fake: FakeOpenAI) -> None:
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({**gateway(fake), "storage": {"dir": str(tmp_path / "data")}}))
    port = free_port()
    process = subprocess.Popen(
        [*LAMINA, "run", str(run_yaml), "--port", str(port), "--log-format", "json"],
        env={"PATH": "/usr/bin:/bin", "LAMINA_HOME": str(tmp_path), "LAMINA_DISABLE_PLUGINS": "lamina-telemetry"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /v1/health within 30s"
            time.sleep(0.1)
        answer = chat(url, "count these words", {"X-Request-ID": "json-1"})
        assert answer.status_code == 200
        usage = answer.json()["usage"]
        streamed = chat(
            url, "a stream", {"X-Request-ID": "json-2"}, stream=True, stream_options={"include_usage": True}
        )
        assert streamed.status_code == 200
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    records = [json.loads(line) for line in stderr.splitlines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records), stderr
    by_id = {r["request_id"]: r for r in records if r["logger"] == "lamina.request"}
    first = by_id["json-1"]
    assert first["route"] == "/v1/chat/completions" and first["method"] == "POST" and first["status"] == 200
    assert first["provider"] == "up" and first["model"] == CHAT_MODEL
    assert (first["input_tokens"], first["output_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    spent = first["duration_ms"]
    assert spent > 0 and "trace_id" not in first  # no telemetry plugin: no trace
    second = by_id["json-2"]
    assert second["status"] == 200 and second["output_tokens"] == 3  # "echo: a stream", in the fake's words
    assert [r for r in records if r["logger"] == "lamina.request" and r["route"] == "/v1/health"]


class Recorder(observe.Observer):
    """An observer of the test's own: what core hands to the seam, recorded."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, Any]]] = []
        self.wrapped: list[tuple[str, str]] = []
        self.closed = False

    def span(self, name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Any]:
        @contextmanager
        def recorded() -> Any:
            self.spans.append((name, dict(attributes)))
            yield

        return recorded()

    def trace_id(self) -> str:
        return "f" * 32

    def wrap_provider(self, instance: Any, provider_id: str, spec: ProviderSpec) -> Any:
        self.wrapped.append((provider_id, spec.type))
        return instance

    async def close(self) -> None:
        self.closed = True


def test_an_observer_plugin_sees_routes_providers_and_puts_its_trace_id_in_errors(fake: FakeOpenAI) -> None:
    recorder = Recorder()

    class ObservingPlugin:
        @hookimpl
        def observer(self, config: RunConfig) -> observe.Observer:
            return recorder

    pm = core_only()
    pm.register(ObservingPlugin(), name="test-observer")
    before = observe.current()  # another test's server may still be running, with its own
    with serve(gateway(fake), pm=pm) as base_url:
        assert observe.current() is recorder
        assert chat(base_url, "hi").status_code == 200
        error = assert_openai_error(chat(base_url, "x", temperature="hot"), 400)
    assert error["trace_id"] == "f" * 32
    assert ("up", "remote::openai") in recorder.wrapped  # with core's file processors, which start on their own
    assert ("router POST /v1/chat/completions", {}) in recorder.spans
    assert recorder.closed and observe.current() is before


def test_a_server_without_an_observer_is_not_observed(fake: FakeOpenAI) -> None:
    """The last stack started decides, even with another stack's observer installed in the process."""
    other = Recorder()
    previous = observe.install(other)
    try:
        with serve(gateway(fake), pm=core_only()) as base_url:
            assert observe.current() is None
            assert chat(base_url, "hi").status_code == 200
        assert observe.current() is other and not other.wrapped and not other.spans
    finally:
        observe.install(previous)
