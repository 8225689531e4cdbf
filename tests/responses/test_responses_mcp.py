"""The Responses `mcp` tool through the tool_runtime API (lamina-tool-mcp): the server lists the MCP server's tools,
the model calls one, the server runs it and the model answers from its output."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from lamina.testing import serve
from openai import OpenAI
from openai.types.responses import Response, ResponseStreamEvent
from responses_helpers import MODEL, responses_config
from responses_wire import assert_lossless, stream_events
from scripted_upstream import ScriptedUpstream

pytest.importorskip("mcp")
pytest.importorskip("lamina_tool_mcp")
sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))

from mcp_servers import McpServer


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpServer]:
    with McpServer("streamable_http") as server:
        yield server


@pytest.fixture(scope="module")
def mcp_url(upstream_server: ScriptedUpstream) -> Iterator[str]:
    config = responses_config(upstream_server)
    config["providers"]["tool_runtime"] = [{"id": "mcp", "type": "remote::model-context-protocol", "config": {}}]
    with serve(config) as url:
        yield url


def tool(server: McpServer, **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "calc", "server_url": server.url, "require_approval": "never", **extra}


def test_mcp_tool_runs_on_the_server(mcp_url: str, mcp_server: McpServer, upstream: ScriptedUpstream) -> None:
    client = OpenAI(base_url=mcp_url, api_key="unused", max_retries=0)
    response = client.responses.create(
        model=MODEL, input='{"a": 2, "b": 3}', tools=[tool(mcp_server, allowed_tools=["add"])]
    )
    listing, call, message = response.output
    assert message.type == "message"
    assert listing.type == "mcp_list_tools" and [t.name for t in listing.tools] == ["add"]
    assert call.type == "mcp_call" and call.name == "add" and call.output == "5" and call.server_label == "calc"
    assert ("add", {"a": 2, "b": 3}) in mcp_server.calls
    assert response.output_text == 'echo: {"a": 2, "b": 3} | tools: 5'  # the tool's output reached the model
    assert_lossless(Response, requests.get(f"{mcp_url}/responses/{response.id}", timeout=10).json())


def test_mcp_events_and_a_failing_call(mcp_url: str, mcp_server: McpServer, upstream: ScriptedUpstream) -> None:
    events = stream_events(
        mcp_url, {"model": MODEL, "input": '{"a": "x"}', "tools": [tool(mcp_server, allowed_tools=["add"])]}
    )
    for event in events:
        assert_lossless(ResponseStreamEvent, event)
    kinds = [e["type"] for e in events]
    assert kinds[2:6] == [
        "response.output_item.added",
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.output_item.done",
    ]
    assert "response.mcp_call_arguments.done" in kinds and "response.mcp_call.failed" in kinds
    call = events[-1]["response"]["output"][1]
    assert call["status"] == "failed" and call["error"]["type"] == "mcp_tool_execution_error"
    assert events[-1]["type"] == "response.completed"


def test_approval_flow(mcp_url: str, mcp_server: McpServer, upstream: ScriptedUpstream) -> None:
    """require_approval (default "always"): the response ends with an mcp_approval_request; approving it in the
    next request runs the call, and the model answers from its output."""
    client = OpenAI(base_url=mcp_url, api_key="unused", max_retries=0)
    calc = {"type": "mcp", "server_label": "calc", "server_url": mcp_server.url, "allowed_tools": ["add"]}
    asked = client.responses.create(model=MODEL, input='{"a": 4, "b": 5}', tools=[calc])
    request = asked.output[-1]
    assert request.type == "mcp_approval_request" and request.name == "add" and asked.status == "completed"
    before = len(mcp_server.calls)
    approved = client.responses.create(
        model=MODEL,
        previous_response_id=asked.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
        tools=[calc],
    )
    call = next(item for item in approved.output if item.type == "mcp_call")
    assert call.output == "9" and call.approval_request_id == request.id
    assert mcp_server.calls[before:] == [("add", {"a": 4, "b": 5})]
    assert approved.output_text.endswith("| tools: 9")
    assert_lossless(Response, requests.get(f"{mcp_url}/responses/{approved.id}", timeout=10).json())


def test_bad_require_approval_is_400(mcp_url: str, mcp_server: McpServer) -> None:
    client = OpenAI(base_url=mcp_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", tools=[tool(mcp_server, require_approval="sometimes")])
    assert caught.value.body["param"] == "tools.0.require_approval"  # type: ignore[index]
