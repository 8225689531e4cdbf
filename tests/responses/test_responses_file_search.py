"""file_search over this server's vector stores: run server-side through the vector_io router, results given to
the model and cited in the answer."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from openai import OpenAI
from openai.types.responses import Response, ResponseStreamEvent
from responses_helpers import MODEL
from responses_wire import assert_lossless, stream_events
from scripted_upstream import ScriptedUpstream

DOCS = {
    "france.txt": ("The capital of France is Paris, on the Seine.", {"topic": "geo"}),
    "fruit.txt": ("Bananas are a yellow fruit that grows in bunches.", {"topic": "food"}),
}


@pytest.fixture(scope="module")
def store(base_url: str) -> Any:
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    store = client.vector_stores.create(name="docs")
    for name, (text, attributes) in DOCS.items():
        uploaded = client.files.create(file=(name, text.encode()), purpose="assistants")
        done = client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=uploaded.id, attributes=attributes
        )
        assert done.status == "completed", done.last_error
    return store


def test_file_search_results_reach_the_model_and_are_cited(
    client: OpenAI, base_url: str, upstream: ScriptedUpstream, store: Any
) -> None:
    response = client.responses.create(
        model=MODEL,
        input="capital of France",
        tools=[{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 1}],
        include=["file_search_call.results"],
    )
    assert response.status == "completed"
    search, message = response.output
    assert search.type == "file_search_call" and search.status == "completed"
    assert search.queries == ["capital of France"]
    assert search.results is not None and [r.filename for r in search.results] == ["france.txt"]
    assert search.results[0].text == DOCS["france.txt"][0] and search.results[0].attributes == {"topic": "geo"}
    assert message.type == "message"
    text = response.output_text
    assert "The capital of France is Paris" in text  # the tool's output reached the model
    [citation] = message.content[0].annotations  # type: ignore[union-attr]
    assert citation.type == "file_citation" and citation.filename == "france.txt"
    assert citation.file_id == search.results[0].file_id and citation.index == len(text)
    assert_lossless(Response, requests.get(f"{base_url}/responses/{response.id}", timeout=10).json())
    tool_message = upstream.chats()[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and "france.txt" in tool_message["content"]


def test_results_left_out_unless_included(client: OpenAI, store: Any) -> None:
    response = client.responses.create(
        model=MODEL, input="yellow fruit", tools=[{"type": "file_search", "vector_store_ids": [store.id]}]
    )
    assert response.output[0].type == "file_search_call" and response.output[0].results is None
    assert "Bananas" in response.output_text


def test_filters_reach_the_search(client: OpenAI, store: Any) -> None:
    response = client.responses.create(
        model=MODEL,
        input="capital of France",
        tools=[
            {
                "type": "file_search",
                "vector_store_ids": [store.id],
                "filters": {"type": "eq", "key": "topic", "value": "food"},
                "ranking_options": {"score_threshold": 0.0},
            }
        ],
        include=["file_search_call.results"],
    )
    assert [r.filename for r in response.output[0].results or []] == ["fruit.txt"]


def test_streamed_file_search_events(base_url: str, store: Any) -> None:
    body = {
        "model": MODEL,
        "input": "capital of France",
        "tools": [{"type": "file_search", "vector_store_ids": [store.id]}],
    }
    events = stream_events(base_url, body)
    for event in events:
        assert_lossless(ResponseStreamEvent, event)
    kinds = [e["type"] for e in events]
    assert kinds[:7] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.output_item.done",
    ]
    assert "response.output_text.annotation.added" in kinds and kinds[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_max_tool_calls_ends_incomplete(client: OpenAI, store: Any) -> None:
    response = client.responses.create(
        model=MODEL,
        input="loop forever",
        tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
        max_tool_calls=2,
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_tool_calls"  # type: ignore[comparison-overlap]
    assert [item.type for item in response.output] == ["file_search_call", "file_search_call"]


def test_unknown_vector_store_is_404(client: OpenAI) -> None:
    import openai

    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(
            model=MODEL, input="x", tools=[{"type": "file_search", "vector_store_ids": ["vs_missing"]}]
        )
    assert caught.value.body["param"] == "tools.0.vector_store_ids"  # type: ignore[index]


def test_upstream_failing_mid_loop(client: OpenAI, base_url: str, upstream: ScriptedUpstream, store: Any) -> None:
    """The model's provider fails on the call after the search: not streamed, the client gets the provider's
    error; streamed, an `error` event and `response.failed`, and the stored response says failed."""
    upstream.fail_status, upstream.fail_from = 503, 2
    body = {
        "model": MODEL,
        "input": "capital of France",
        "tools": [{"type": "file_search", "vector_store_ids": [store.id]}],
    }
    answer = requests.post(f"{base_url}/responses", json=body, timeout=30)
    assert answer.status_code == 502 and "'up'" in answer.json()["error"]["message"], answer.text
    upstream.requests.clear()
    events = stream_events(base_url, body)
    for event in events:
        assert_lossless(ResponseStreamEvent, event)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and "'up'" in failed["error"]["message"]
    assert client.responses.retrieve(failed["id"]).status == "failed"


def test_forced_file_search_searches_without_asking_the_model(
    client: OpenAI, upstream: ScriptedUpstream, store: Any
) -> None:
    response = client.responses.create(
        model=MODEL,
        input="yellow fruit",
        tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
        tool_choice={"type": "file_search"},
    )
    assert [item.type for item in response.output] == ["file_search_call", "message"]
    assert response.output[0].queries == ["yellow fruit"]  # type: ignore[union-attr]
    [only] = upstream.chats()  # one model call: the answer
    assert only["messages"][-1]["role"] == "tool" and "Bananas" in only["messages"][-1]["content"]
