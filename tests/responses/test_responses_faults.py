"""Faults: a client leaving mid-stream cancels the work; a server killed (SIGKILL) mid-response leaves it failed
(never in_progress forever, never looking completed), and none of its items in the conversation; stored responses
and conversations survive restarts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml
from lamina.testing import serve
from openai import OpenAI
from responses_helpers import MODEL, responses_config
from scripted_upstream import ScriptedUpstream

WAIT_SECONDS = 20  # for a state another process reaches


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def lamina_process(run_yaml: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    command = [sys.executable, "-c", "from lamina.cli import main; main()", "run", str(run_yaml), "--port", str(port)]
    with open(log, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=os.environ.copy())
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if requests.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def test_client_leaving_mid_stream_cancels_the_work(client: OpenAI, base_url: str, upstream: ScriptedUpstream) -> None:
    upstream.stream_delay = 0.3
    body = {"model": MODEL, "input": " ".join(f"w{i}" for i in range(40)), "stream": True}
    response_id = None
    with requests.post(f"{base_url}/responses", json=body, timeout=30, stream=True) as response:
        for line in response.iter_lines(decode_unicode=True):
            if '"response.output_text.delta"' in line:
                break
            if '"response.created"' in line and line.startswith("data: "):
                import json

                response_id = json.loads(line[6:])["response"]["id"]
    assert response_id is not None
    assert upstream.disconnected.wait(15)  # the upstream call was closed too
    deadline = time.monotonic() + 10
    while client.responses.retrieve(response_id).status != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.responses.retrieve(response_id).status == "cancelled"


@pytest.mark.slow  # two `lamina run` processes: ~6 s
def test_sigkill_mid_stream_leaves_nothing_half_done(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    config = responses_config(upstream)
    config["storage"] = {"dir": str(tmp_path / "data")}
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({"version": 1, **config}))
    log = tmp_path / "lamina.log"
    with lamina_process(run_yaml, log) as (process, url):
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        kept = client.responses.create(model=MODEL, input="kept")
        conversation = client.conversations.create(items=[{"role": "user", "content": "before"}])
        upstream.stream_delay = 0.2
        response_id = ""
        with client.responses.stream(
            model=MODEL, input=" ".join(f"w{i}" for i in range(50)), conversation=conversation.id
        ) as stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    process.send_signal(signal.SIGKILL)
                    process.wait(10)
                    break
                if event.type == "response.created":
                    response_id = event.response.id
    upstream.stream_delay = 0
    with lamina_process(run_yaml, log) as (_, url):
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        assert client.responses.retrieve(kept.id).output_text == "echo: kept"
        # Its process is gone: the response is failed, saying why, with none of its half-made output.
        interrupted = client.responses.retrieve(response_id)
        assert interrupted.status == "failed" and interrupted.output == []
        assert interrupted.error is not None and "server stopped" in interrupted.error.message
        listed = {r["id"]: r["status"] for r in requests.get(f"{url}/responses", timeout=10).json()["data"]}
        assert listed[response_id] == "failed"
        items = client.conversations.items.list(conversation.id).data
        assert [i.content[0].text for i in items] == ["before"]  # type: ignore[union-attr]


@pytest.mark.slow  # two `lamina run` processes sharing one storage: ~6 s
def test_a_replica_fails_a_streamed_response_whose_server_stopped_beating(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    # A frozen server (SIGSTOP) still has a process, so only its heartbeat can tell: once it is older than
    # heartbeat_seconds, the other replica reading the response fails it.
    config = responses_config(upstream, responses={"heartbeat_seconds": 1})
    config["storage"] = {"dir": str(tmp_path / "data")}
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({"version": 1, **config}))
    log = tmp_path / "lamina.log"
    with lamina_process(run_yaml, log) as (frozen, frozen_url), lamina_process(run_yaml, log) as (_, replica_url):
        upstream.stream_delay = 0.2
        replica = OpenAI(base_url=replica_url, api_key="unused", max_retries=0)
        stream = OpenAI(base_url=frozen_url, api_key="unused", max_retries=0, timeout=30).responses.create(
            model=MODEL, input=" ".join(f"w{i}" for i in range(50)), stream=True
        )
        response_id = ""
        for event in stream:
            if event.type == "response.created":
                response_id = event.response.id
            if event.type == "response.output_text.delta":
                assert replica.responses.retrieve(response_id).status == "in_progress"  # its server beats
                frozen.send_signal(signal.SIGSTOP)
                break
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while (seen := replica.responses.retrieve(response_id)).status == "in_progress":
                assert time.monotonic() < deadline, "the replica never noticed the frozen server"
                time.sleep(0.2)
            assert seen.status == "failed" and seen.output == []
            assert seen.error is not None and "server stopped" in seen.error.message
        finally:
            frozen.send_signal(signal.SIGKILL)
            frozen.wait(10)
            stream.close()
            upstream.stream_delay = 0


def test_everything_stored_survives_a_restart(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    config = responses_config(upstream)
    config["storage"] = {"dir": str(tmp_path)}
    with serve(config) as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        conversation = client.conversations.create(metadata={"a": "b"})
        first = client.responses.create(model=MODEL, input="remember", conversation=conversation.id)
    with serve(config) as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        assert client.responses.retrieve(first.id).output_text == "echo: remember"
        assert client.conversations.retrieve(conversation.id).metadata == {"a": "b"}
        assert len(client.conversations.items.list(conversation.id).data) == 2
        follow = client.responses.create(model=MODEL, input="again", previous_response_id=first.id)
        assert follow.output_text == "echo: again"
        assert [m["content"] for m in upstream.chats()[-1]["messages"]] == ["remember", "echo: remember", "again"]


def test_a_stored_response_survives_a_sigkill_right_after_it_returns(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    # A response is committed before the client gets it: a server killed right after (no shutdown, no checkpoint)
    # has lost nothing of it.
    config = responses_config(upstream)
    config["storage"] = {"dir": str(tmp_path / "data")}
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({"version": 1, **config}))
    log = tmp_path / "lamina.log"
    with lamina_process(run_yaml, log) as (process, url):
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        created = [client.responses.create(model=MODEL, input=f"keep {n}") for n in range(3)]
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    with lamina_process(run_yaml, log) as (_, url):
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        for n, response in enumerate(created):
            kept = client.responses.retrieve(response.id)
            assert kept.status == "completed" and kept.output_text == f"echo: keep {n}"
        follow = client.responses.create(model=MODEL, input="and then", previous_response_id=created[-1].id)
        assert [m["content"] for m in upstream.chats()[-1]["messages"]] == ["keep 2", "echo: keep 2", "and then"]
        assert follow.output_text == "echo: and then"


@pytest.mark.slow
def test_sigkill_during_a_background_response_runs_it_again(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    config = responses_config(upstream, responses={"background_lease_seconds": 1})
    config["storage"] = {"dir": str(tmp_path / "data")}
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({"version": 1, **config}))
    log = tmp_path / "lamina.log"
    upstream.hang_seconds = 30
    with lamina_process(run_yaml, log) as (process, url):
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        queued = client.responses.create(model=MODEL, input="outlive a crash", background=True)
        assert upstream.chat_started.wait(15)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    upstream.hang_seconds = 0
    with lamina_process(run_yaml, log) as (_, url):
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        deadline = time.monotonic() + 30
        while (done := client.responses.retrieve(queued.id)).status != "completed" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert done.status == "completed" and done.output_text == "echo: outlive a crash"
