"""OpenAI's Batches API through the official client: JSONL in, results as files, cancel, and a SIGKILL mid-batch."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
import yaml
from e2e_helpers import SECRET, assert_healthy, assert_openai_error
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI, free_port, reply_for, vector_for
from lamina.testing import serve
from openai import OpenAI

MODEL = f"fake/{CHAT_MODEL}"
EMBEDDER = f"fake/{EMBEDDING_MODEL}"


def batch_config(fake: FakeOpenAI, data_dir: Path | None = None, **batches: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "distro": "e2e-batches",
        "providers": {
            "inference": [
                {
                    "id": "fake",
                    "type": "remote::openai",
                    "config": {"base_url": fake.base_url, "api_key": SECRET, "max_retries": 0},
                }
            ],
            "files": [{"id": "files", "type": "inline::localfs", "config": {}}],
        },
        "apis": {"batches": batches},
    }
    if data_dir is not None:
        config["storage"] = {"dir": str(data_dir)}
    return config


@pytest.fixture(scope="module")
def client(fake_server: FakeOpenAI) -> Iterator[OpenAI]:
    with serve(batch_config(fake_server, max_in_flight_per_batch=4)) as url:
        yield OpenAI(base_url=url, api_key="unused", max_retries=0)


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def chat_line(custom_id: str, text: str, model: str = MODEL) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def embedding_line(custom_id: str, text: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": EMBEDDER, "input": text},
    }


def upload(client: OpenAI, lines: list[Any]) -> str:
    return client.files.create(file=("requests.jsonl", io.BytesIO(jsonl(lines))), purpose="batch").id


def wait_for(client: OpenAI, batch_id: str, done: Callable[[Any], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)


def finished(batch: Any) -> bool:
    return batch.status in ("completed", "failed", "cancelled", "expired")


def lines_of(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_batch_of_chat_completions_answers_every_line_once(client: OpenAI, fake: FakeOpenAI) -> None:
    lines = [chat_line(f"q{i}", f"question number {i}") for i in range(6)] + [
        chat_line("unknown", "hello", model="fake/no-such-model")
    ]
    batch = client.batches.create(
        input_file_id=upload(client, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert batch.status == "validating" and batch.metadata == {"job": "nightly"}
    batch = wait_for(client, batch.id, finished)
    assert batch.status == "completed", batch
    assert batch.request_counts.total == 7
    assert batch.request_counts.completed == 6 and batch.request_counts.failed == 1
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at

    # As OpenAI's, the output is in completion order: lines are matched by custom_id.
    outputs = {line["custom_id"]: line for line in lines_of(client, batch.output_file_id)}
    assert sorted(outputs) == [f"q{i}" for i in range(6)]
    for i in range(6):
        line = outputs[f"q{i}"]
        assert line["response"]["status_code"] == 200 and line["error"] is None
        body = line["response"]["body"]
        assert body["object"] == "chat.completion"
        # The fake upstream answers from the question: each line reached the model with its own body.
        assert body["choices"][0]["message"]["content"] == reply_for(fake_request_for(fake, f"question number {i}"))
    errors = lines_of(client, batch.error_file_id)
    assert [line["custom_id"] for line in errors] == ["unknown"]
    assert errors[0]["response"]["status_code"] == 404
    assert errors[0]["error"]["code"] and "no-such-model" in errors[0]["error"]["message"]
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"

    listed = client.batches.list(limit=100)
    assert batch.id in [b.id for b in listed.data]


def fake_request_for(fake: FakeOpenAI, text: str) -> dict[str, Any]:
    for hit in fake.hits("/v1/chat/completions"):
        if hit["body"]["messages"][-1]["content"] == text:
            return hit["body"]
    raise AssertionError(f"the upstream never received {text!r}")


def test_an_embeddings_batch_answers_each_line_with_its_own_vector(client: OpenAI) -> None:
    lines = [embedding_line(f"e{i}", f"text {i}") for i in range(25)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    batch = wait_for(client, batch.id, finished)
    assert batch.status == "completed" and batch.request_counts.completed == 25
    outputs = lines_of(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in outputs) == sorted(f"e{i}" for i in range(25))
    for line in outputs:
        text = f"text {line['custom_id'][1:]}"
        assert line["response"]["body"]["data"][0]["embedding"] == pytest.approx(vector_for(text))
    assert batch.error_file_id is None
    assert len({line["id"] for line in outputs}) == 25


def test_bad_lines_fail_the_whole_batch_naming_them(client: OpenAI, fake: FakeOpenAI) -> None:
    lines = [
        chat_line("ok", "fine"),
        b"{not json",
        {**chat_line("wrong-url", "x"), "url": "/v1/embeddings"},
        chat_line("ok", "the same custom_id again"),
        {"custom_id": "no-body", "method": "POST", "url": "/v1/chat/completions"},
    ]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_for(client, batch.id, finished)
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [
        (2, "invalid_json"),
        (3, "mismatched_url"),
        (4, "duplicate_custom_id"),
        (5, "invalid_request"),
    ]
    assert not fake.hits("/v1/chat/completions"), "a batch that fails validation runs no line"


def test_bad_requests_are_refused_with_openai_errors(client: OpenAI) -> None:
    base = str(client.base_url).rstrip("/")
    good_file = upload(client, [chat_line("a", "b")])
    other = client.files.create(file=("notes.txt", io.BytesIO(b"hello")), purpose="assistants").id
    create = f"{base}/batches"
    cases = [
        ({"input_file_id": good_file, "endpoint": "/v1/files", "completion_window": "24h"}, 400, "endpoint"),
        (
            {"input_file_id": other, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
            400,
            "input_file_id",
        ),
        (
            {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
            404,
            "input_file_id",
        ),
        (
            {"input_file_id": good_file, "endpoint": "/v1/chat/completions", "completion_window": "1h"},
            400,
            "completion_window",
        ),
        ({"endpoint": "/v1/chat/completions", "completion_window": "24h"}, 400, "input_file_id"),
    ]
    for body, status, param in cases:
        assert_openai_error(requests.post(create, json=body, timeout=10), status, param=param)
    assert_openai_error(requests.get(f"{base}/batches/batch_nope", timeout=10), 404, param="batch_id")
    assert_openai_error(requests.post(f"{base}/batches/batch_nope/cancel", timeout=10), 404, param="batch_id")
    assert_openai_error(requests.get(f"{base}/batches?limit=0", timeout=10), 400, param="limit")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_cancel_stops_new_lines_and_the_server_stays_responsive(client: OpenAI, fake: FakeOpenAI) -> None:
    fake.hang(0.2)  # every upstream request takes 0.2 s: 40 lines at 4 in flight take ~2 s
    lines = [chat_line(f"c{i}", f"slow {i}") for i in range(40)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for(client, batch.id, lambda b: b.request_counts.completed >= 4)
    # Interactive traffic is answered while the batch runs.
    assert_healthy(str(client.base_url).rstrip("/"))
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}]).choices

    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    batch = wait_for(client, batch.id, finished)
    assert batch.status == "cancelled" and batch.cancelled_at
    done = batch.request_counts.completed + batch.request_counts.failed
    assert 4 <= done < 40, batch.request_counts
    sent = len(
        [h for h in fake.hits("/v1/chat/completions") if h["body"]["messages"][-1]["content"].startswith("slow")]
    )
    assert sent == done, "every line sent before the cancel finished and was counted; none was sent after"
    outputs = lines_of(client, batch.output_file_id)
    assert len(outputs) == batch.request_counts.completed
    # A finished batch cannot be cancelled.
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def lamina_process(run_yaml: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from lamina.cli import main; main()", "run", str(run_yaml), "--port", str(port)]
    with open(log, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return process
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_a_batch_survives_sigkill_and_each_line_is_in_the_output_once(fake: FakeOpenAI, tmp_path: Path) -> None:
    run_yaml = tmp_path / "run.yaml"
    config = batch_config(fake, tmp_path / "data", max_in_flight_per_batch=4, lease_seconds=2)
    run_yaml.write_text(yaml.safe_dump(config))
    port = free_port()
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    fake.hang(0.1)
    total = 60
    process = lamina_process(run_yaml, port, tmp_path / "lamina.log")
    try:
        lines = [embedding_line(f"k{i}", f"kill test {i}") for i in range(total)]
        batch = client.batches.create(
            input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
        )
        stored = wait_for(client, batch.id, lambda b: b.request_counts.completed >= 8).request_counts.completed
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        sent_before = len(fake.hits("/v1/embeddings"))
        assert sent_before < total, "the batch finished before the kill; make the upstream slower"

        process = lamina_process(run_yaml, port, tmp_path / "lamina.log")
        batch = wait_for(client, batch.id, finished, timeout=90)
        assert batch.status == "completed", batch
        assert batch.request_counts.completed == total and batch.request_counts.failed == 0
        outputs = lines_of(client, batch.output_file_id)
        assert sorted(line["custom_id"] for line in outputs) == sorted(f"k{i}" for i in range(total))
        # Lines whose result was stored (the progress counts only those) were not sent again.
        assert len(fake.hits("/v1/embeddings")) <= total + sent_before - stored
    finally:
        process.terminate()
        process.wait(30)


WINDOW_SECONDS = 2  # the completion window of the expiry test's server (a test setting; 24 h otherwise)
SLOW_LINE_SECONDS = 3.5  # the first line takes this long upstream: past the window, wherever in a second it began


def test_a_batch_past_its_completion_window_expires_and_lists_the_lines_it_did_not_run(fake: FakeOpenAI) -> None:
    with serve(batch_config(fake, completion_window_seconds=WINDOW_SECONDS, max_in_flight_per_batch=1)) as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        client.models.list()  # model discovery is done before the upstream is made slow
        fake.hang(SLOW_LINE_SECONDS, times=1)
        lines = [chat_line(f"e{i}", f"expiring {i}") for i in range(3)]
        batch = client.batches.create(
            input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.expires_at == batch.created_at + WINDOW_SECONDS
        batch = wait_for(client, batch.id, finished)
        assert batch.status == "expired" and batch.expired_at and not batch.completed_at
        assert batch.request_counts.model_dump() == {"total": 3, "completed": 1, "failed": 2}
        [answered] = lines_of(client, batch.output_file_id)
        assert answered["custom_id"] == "e0"
        assert answered["response"]["body"]["choices"][0]["message"]["content"] == "echo: expiring 0"
        expired = lines_of(client, batch.error_file_id)
        assert [line["custom_id"] for line in expired] == ["e1", "e2"]
        for line in expired:
            assert line["response"] is None and line["error"]["code"] == "batch_expired"
            assert line["id"].startswith("batch_req_") and line["error"]["message"]
        sent = [h["body"]["messages"][-1]["content"] for h in fake.hits("/v1/chat/completions")]
        assert sent == ["expiring 0"], "no line starts after the window has ended"


BUDGET = 10  # tokens; each line below uses 4 with the fake upstream (2 in, 2 out), so 3 lines fit


def test_batch_lines_count_against_the_owners_quotas(fake: FakeOpenAI, tmp_path: Path) -> None:
    from auth_helpers import make_key
    from auth_helpers import stack_config as auth_stack_config

    config = auth_stack_config(fake, tmp_path)
    config["apis"]["batches"] = {"max_in_flight_per_batch": 1}
    with serve(config) as url:
        limited = make_key(tmp_path, "carol", limits={"token_budget": BUDGET})
        unlimited = make_key(tmp_path, "carol")  # the same caller with another key: reads her batch, has no limit
        creator = OpenAI(base_url=url, api_key=limited, max_retries=0)
        reader = OpenAI(base_url=url, api_key=unlimited, max_retries=0)
        lines = [chat_line(f"t{i}", f"word{i}") for i in range(5)]
        batch = creator.batches.create(
            input_file_id=upload(creator, lines), endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = wait_for(reader, batch.id, finished)
        assert batch.status == "completed", "a line over quota fails alone, not the batch"
        assert batch.request_counts.model_dump() == {"total": 5, "completed": 3, "failed": 2}
        assert [line["custom_id"] for line in lines_of(reader, batch.output_file_id)] == ["t0", "t1", "t2"]
        refused = lines_of(reader, batch.error_file_id)
        assert [line["custom_id"] for line in refused] == ["t3", "t4"]
        for line in refused:
            assert line["response"]["status_code"] == 429
            assert line["response"]["body"]["error"]["type"] == "insufficient_quota"
            assert line["error"]["code"] == "insufficient_quota"
        assert len(fake.hits("/v1/chat/completions")) == 3, "refused lines never reach the upstream"
        # The batch spent the key's budget: the key's own next request is refused too.
        with pytest.raises(openai.RateLimitError):
            creator.chat.completions.create(model="fake/" + CHAT_MODEL, messages=[{"role": "user", "content": "x"}])
        # The lines run are in the key's usage, under the model they asked for.
        admin = make_key(tmp_path, "root", scopes=["admin"])
        usage = requests.get(
            url.removesuffix("/v1") + "/v1alpha/admin/usage", headers={"Authorization": f"Bearer {admin}"}, timeout=10
        )
        assert usage.status_code == 200, usage.text
        [row] = [r for r in usage.json()["data"] if r["principal"] == "carol" and r["model"] != "-"]
        assert (row["requests"], row["total_tokens"]) == (3, 12), row
