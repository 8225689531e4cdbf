"""Background responses: queued as durable jobs, polled, cancelled, and resumed by the next server after a stop."""

from __future__ import annotations

import time
from pathlib import Path

from lamina.testing import serve
from openai import OpenAI
from openai.types.responses import Response
from responses_helpers import MODEL, responses_config
from scripted_upstream import ScriptedUpstream


def poll(client: OpenAI, response_id: str, timeout: float = 30) -> Response:
    deadline = time.monotonic() + timeout
    while True:
        response = client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_background_response_completes(client: OpenAI) -> None:
    queued = client.responses.create(model=MODEL, input="do it later", background=True)
    assert queued.status == "queued" and queued.background
    done = poll(client, queued.id)
    assert done.status == "completed" and done.output_text == "echo: do it later"
    assert [i.content[0].text for i in client.responses.input_items.list(queued.id).data] == ["do it later"]  # type: ignore[union-attr]


def test_background_response_is_cancelled(client: OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.hang_seconds = 30
    queued = client.responses.create(model=MODEL, input="never mind", background=True)
    assert upstream.chat_started.wait(15)
    assert client.responses.retrieve(queued.id).status == "in_progress"
    assert client.responses.cancel(queued.id).status == "cancelled"
    time.sleep(0.2)
    assert client.responses.retrieve(queued.id).status == "cancelled"


def test_cancel_needs_a_background_response(client: OpenAI) -> None:
    import openai
    import pytest

    done = client.responses.create(model=MODEL, input="now")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(done.id)


def test_background_response_resumes_after_a_restart(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    config = responses_config(upstream)
    config["storage"] = {"dir": str(tmp_path)}
    upstream.hang_seconds = 30
    with serve(config) as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        queued = client.responses.create(model=MODEL, input="survive a restart", background=True)
        assert upstream.chat_started.wait(15)
    upstream.hang_seconds = 0
    with serve(config) as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        done = poll(client, queued.id)
        assert done.status == "completed" and done.output_text == "echo: survive a restart"


def test_streamed_background_response(client: OpenAI, base_url: str, upstream: ScriptedUpstream) -> None:
    from openai.types.responses import ResponseStreamEvent
    from responses_wire import assert_lossless, stream_events

    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    events = stream_events(base_url, {"model": MODEL, "input": "stream it later", "background": True})
    for event in events:
        assert_lossless(ResponseStreamEvent, event)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.queued"] and kinds[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "echo: stream it later" == events[-1]["response"]["output"][0]["content"][0]["text"]

    with client.responses.stream(model=MODEL, input="w", tools=[weather], background=True) as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "function_call"


def test_leaving_a_streamed_background_response_does_not_stop_it(
    client: OpenAI, base_url: str, upstream: ScriptedUpstream
) -> None:
    import json

    import requests

    upstream.hang_seconds = 1
    body = {"model": MODEL, "input": "keep going", "background": True, "stream": True}
    with requests.post(f"{base_url}/responses", json=body, timeout=30, stream=True) as response:
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                response_id = json.loads(line[6:])["response"]["id"]
                break
    done = poll(client, response_id)
    assert done.status == "completed" and done.output_text == "echo: keep going"
