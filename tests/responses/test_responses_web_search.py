"""The `web_search` tool through lamina-tool-websearch (remote::web-search) over a fake SearXNG: the search runs
(the fake saw the query), its results reach the model, the answer cites them (`url_citation`), the stream carries
OpenAI's web_search_call events, and a search backend that fails leaves a failed item in a completed response."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml
from fake_searxng import FakeSearxng, results_for
from lamina.testing import serve
from openai import OpenAI
from responses_helpers import MODEL, responses_config
from scripted_upstream import ScriptedUpstream, text_of


def web_search_config(upstream: ScriptedUpstream, search: dict[str, Any]) -> dict[str, Any]:
    config = responses_config(upstream)
    config["providers"]["tool_runtime"] = [{"id": "websearch", "type": "remote::web-search", "config": search}]
    return config


@pytest.fixture(scope="module")
def searxng() -> Iterator[FakeSearxng]:
    with FakeSearxng() as fake:
        yield fake


@pytest.fixture(scope="module")
def search_url(upstream_server: ScriptedUpstream, searxng: FakeSearxng) -> Iterator[str]:
    with serve(web_search_config(upstream_server, {"base_url": searxng.base_url})) as url:
        yield url


@pytest.fixture
def search_client(search_url: str, upstream: ScriptedUpstream, searxng: FakeSearxng) -> Iterator[OpenAI]:
    searxng.failing = False
    yield OpenAI(base_url=search_url, api_key="unused", max_retries=0)
    searxng.failing = False


def test_a_streamed_web_search_runs_reaches_the_model_and_is_cited(
    search_client: OpenAI, searxng: FakeSearxng, upstream: ScriptedUpstream
) -> None:
    query = "tide tables saint malo"
    with search_client.responses.stream(
        model=MODEL, input=query, tools=[{"type": "web_search"}], include=["web_search_call.action.sources"]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert searxng.queries[-1] == {"q": query, "format": "json"}  # the search ran, through SearXNG's JSON API
    steps = [k for k in kinds if k.startswith("response.web_search_call.")]
    assert steps == [f"response.web_search_call.{s}" for s in ("in_progress", "searching", "completed")]
    assert kinds.index("response.web_search_call.completed") < kinds.index("response.output_text.delta")
    assert kinds[-1] == "response.completed"
    call, message = final.output
    assert call.type == "web_search_call" and call.status == "completed"
    assert call.action.type == "search" and call.action.query == query
    urls = [r["url"] for r in results_for(query)]
    assert [source.url for source in call.action.sources or []] == urls
    # The results reached the model: its second call carries them as the tool's output.
    tool_messages = [m for m in upstream.chats()[-1]["messages"] if m["role"] == "tool"]
    assert urls[0] in text_of(tool_messages[0]["content"]) and "[2]" in text_of(tool_messages[0]["content"])
    assert message.type == "message"
    text = message.content[0].text
    citations = [a for a in message.content[0].annotations if a.type == "url_citation"]
    assert {c.url for c in citations} == set(urls)
    for citation in citations:  # each points at where the answer names the source: its URL or its [number]
        assert text[citation.start_index : citation.end_index] in (citation.url, f"[{urls.index(citation.url) + 1}]")
    stored = search_client.responses.retrieve(final.id)
    assert stored.output[0].type == "web_search_call" and stored.output_text == final.output_text


def test_web_search_preview_and_a_named_tool_choice(search_client: OpenAI, searxng: FakeSearxng) -> None:
    before = len(searxng.queries)
    answer = search_client.responses.create(
        model=MODEL,
        input="lamina gateway",
        tools=[{"type": "web_search_preview"}],
        tool_choice={"type": "web_search_preview"},
    )
    assert len(searxng.queries) == before + 1
    assert answer.status == "completed" and answer.output[0].type == "web_search_call"
    assert answer.output[0].action.sources is None  # not asked for with `include`
    assert "https://example.org/lamina-gateway/1" in answer.output_text


def test_a_failing_search_backend_fails_the_call_not_the_response(search_client: OpenAI, searxng: FakeSearxng) -> None:
    searxng.failing = True
    answer = search_client.responses.create(model=MODEL, input="anything", tools=[{"type": "web_search"}])
    assert searxng.queries[-1]["q"] == "anything"
    assert answer.status == "completed"
    call = answer.output[0]
    assert call.type == "web_search_call" and call.status == "failed"
    assert "The web search failed" in answer.output_text and "500" in answer.output_text  # the model was told
    assert not [a for a in answer.output[-1].content[0].annotations if a.type == "url_citation"]


def test_a_search_backend_that_is_down(upstream: ScriptedUpstream) -> None:
    with FakeSearxng() as gone:
        dead = gone.base_url
    with serve(web_search_config(upstream, {"base_url": dead, "timeout_seconds": 5})) as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        with client.responses.stream(model=MODEL, input="q", tools=[{"type": "web_search"}]) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
        assert final.status == "completed" and final.output[0].status == "failed"
        assert "response.web_search_call.completed" not in kinds and kinds[-1] == "response.completed"
        assert "could not be reached" in final.output_text


def test_the_provider_serves_llama_stacks_tool_runtime_too(search_url: str, searxng: FakeSearxng) -> None:
    group = {"toolgroup_id": "builtin::websearch", "provider_id": "websearch"}
    assert requests.post(f"{search_url}/toolgroups", json=group, timeout=10).status_code == 200
    tools = requests.get(f"{search_url}/tools", params={"toolgroup_id": "builtin::websearch"}, timeout=10).json()
    assert [tool["name"] for tool in tools["data"]] == ["web_search"]
    invoked = requests.post(
        f"{search_url}/tool-runtime/invoke", json={"tool_name": "web_search", "kwargs": {"query": "otters"}}, timeout=10
    ).json()
    assert searxng.queries[-1]["q"] == "otters"
    assert "https://example.org/otters/1" in invoked["content"]
    assert invoked["metadata"]["results"][0]["url"] == "https://example.org/otters/1"


def test_a_brave_compatible_api_with_a_key(upstream: ScriptedUpstream, searxng: FakeSearxng) -> None:
    search = {"base_url": searxng.base_url, "api": "brave", "api_key": "brave-key"}
    with serve(web_search_config(upstream, search)) as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        answer = client.responses.create(model=MODEL, input="puffins", tools=[{"type": "web_search"}])
    assert searxng.headers[-1]["X-Subscription-Token"] == "brave-key"
    assert searxng.queries[-1]["q"] == "puffins"
    assert answer.output[0].status == "completed" and "https://example.org/puffins/1" in answer.output_text


def starter_config(*env: str) -> dict[str, Any]:
    command = [sys.executable, "-c", "from lamina.cli import main; main()", "config", "starter", *env]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEB_SEARCH_")}
    result = subprocess.run(command, capture_output=True, text=True, env=clean, timeout=120, check=True)
    return dict(yaml.safe_load(result.stdout))


def test_the_starter_distro_has_web_search_dormant_until_its_url_is_set() -> None:
    assert [p["id"] for p in starter_config()["providers"]["tool_runtime"]] == ["mcp"]
    config = starter_config("--env", "WEB_SEARCH_URL=http://127.0.0.1:9", "--env", "WEB_SEARCH_API_KEY=k-secret")
    websearch = config["providers"]["tool_runtime"][1]
    assert websearch["id"] == "websearch" and websearch["type"] == "remote::web-search"
    assert websearch["config"]["base_url"] == "http://127.0.0.1:9" and websearch["config"]["api"] == "searxng"
    assert websearch["config"]["api_key"] != "k-secret"  # shown masked, like every key
