"""The tool runtime API over real MCP servers (FastMCP, streamable HTTP and SSE, on 127.0.0.1): Lamina lists and
invokes their tools through /v1/tool-runtime/*, /v1/tools, /v1/toolgroups and /v1beta/connectors; the servers see
the calls and the headers; a server that is down or too slow is a clear error, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from e2e_helpers import assert_openai_error
from fake_openai import free_port
from lamina.apis.tool_runtime.router import ToolRuntimeRouter
from lamina.config import ConfigError, resolve
from lamina.resolver import start_stack
from lamina.testing import serve
from mcp_servers import McpServer

TOKEN = "mcp-secret-token-42"


@pytest.fixture(scope="module")
def http_server() -> Iterator[McpServer]:
    with McpServer("streamable_http") as server:
        yield server


@pytest.fixture(scope="module")
def sse_server() -> Iterator[McpServer]:
    with McpServer("sse", name="sse-demo") as server:
        yield server


def stack_config(http_server: McpServer, sse_server: McpServer, timeout: float = 20) -> dict[str, Any]:
    return {
        "providers": {
            "tool_runtime": [
                {"id": "mcp", "type": "remote::model-context-protocol", "config": {"timeout_seconds": timeout}},
            ]
        },
        "apis": {
            "tool_runtime": {
                "toolgroups": [
                    {"toolgroup_id": "mcp::demo", "provider_id": "mcp", "mcp_endpoint": {"uri": http_server.url}}
                ],
                "connectors": [
                    {"connector_id": "sse-demo", "url": sse_server.url, "authorization": TOKEN, "server_label": "S"}
                ],
            }
        },
    }


@pytest.fixture(scope="module")
def base_url(http_server: McpServer, sse_server: McpServer) -> Iterator[str]:
    with serve(stack_config(http_server, sse_server)) as url:
        yield url


def test_list_and_invoke_over_streamable_http(base_url: str, http_server: McpServer) -> None:
    groups = requests.get(f"{base_url}/toolgroups", timeout=10).json()["data"]
    assert [(g["identifier"], g["provider_id"], g["mcp_endpoint"]["uri"]) for g in groups] == [
        ("mcp::demo", "mcp", http_server.url)
    ]
    listed = requests.get(
        f"{base_url}/tool-runtime/list-tools", params={"tool_group_id": "mcp::demo"}, timeout=10
    ).json()["data"]
    assert {t["name"] for t in listed} == {"add", "slow"}
    add = next(t for t in listed if t["name"] == "add")
    assert add["toolgroup_id"] == "mcp::demo" and add["description"] == "Add two integers"
    assert set(add["input_schema"]["properties"]) == {"a", "b"}
    assert {t["name"] for t in requests.get(f"{base_url}/tools", timeout=10).json()["data"]} >= {"add", "slow"}
    assert requests.get(f"{base_url}/tools/add", timeout=10).json()["toolgroup_id"] == "mcp::demo"

    before = len(http_server.calls)
    result = requests.post(
        f"{base_url}/tool-runtime/invoke",
        json={"tool_name": "add", "kwargs": {"a": 20, "b": 22}, "authorization": TOKEN},
        timeout=10,
    )
    assert result.status_code == 200, result.text
    assert result.json()["content"] == [{"type": "text", "text": "42"}] and result.json()["error_message"] is None
    assert http_server.calls[before:] == [("add", {"a": 20, "b": 22})]
    assert any(h.get("authorization") == f"Bearer {TOKEN}" for h in http_server.headers)


def test_tool_list_is_cached(base_url: str, http_server: McpServer) -> None:
    params = {"mcp_endpoint": http_server.url, "authorization": "cache-test"}
    first = requests.get(f"{base_url}/tool-runtime/list-tools", params=params, timeout=10)
    listings = http_server.mcp.listings
    second = requests.get(f"{base_url}/tool-runtime/list-tools", params=params, timeout=10)
    assert first.json() == second.json() and {t["name"] for t in first.json()["data"]} == {"add", "slow"}
    assert http_server.mcp.listings == listings  # the second listing came from the cache


def test_sse_connector_and_registered_group(base_url: str, sse_server: McpServer) -> None:
    connectors = requests.get(f"{base_url.removesuffix('/v1')}/v1beta/connectors", timeout=10).json()["data"]
    assert [(c["connector_id"], c["url"], c["server_label"]) for c in connectors] == [("sse-demo", sse_server.url, "S")]
    assert TOKEN not in str(connectors)
    beta = base_url.removesuffix("/v1") + "/v1beta"
    connector = requests.get(f"{beta}/connectors/sse-demo", timeout=10).json()
    assert connector["server_name"] == "sse-demo" and connector["server_description"] == "the sse-demo test server"
    tools = requests.get(f"{beta}/connectors/sse-demo/tools", timeout=10).json()["data"]
    assert {t["name"] for t in tools} == {"reverse", "explode"}
    assert requests.get(f"{beta}/connectors/sse-demo/tools/reverse", timeout=10).json()["name"] == "reverse"
    assert sse_server.headers[-1].get("authorization") == f"Bearer {TOKEN}"  # the connector's own credentials
    assert_openai_error(requests.get(f"{beta}/connectors/sse-demo/tools/nope", timeout=10), 404, param="tool_name")

    registered = requests.post(
        f"{base_url}/toolgroups",
        json={
            "toolgroup_id": "sse",
            "provider_id": "mcp",
            "mcp_endpoint": {"uri": sse_server.url},
            "args": {"headers": {"X-Trace": "trace-7"}},
        },
        timeout=10,
    )
    assert registered.status_code == 200, registered.text
    assert registered.json()["args"]["headers"] == {"X-Trace": "***"}  # header values are never shown
    result = requests.post(
        f"{base_url}/tool-runtime/invoke", json={"tool_name": "reverse", "kwargs": {"text": "lamina"}}, timeout=10
    ).json()
    assert result["content"][0]["text"] == "animal"
    assert sse_server.calls[-1] == ("reverse", {"text": "lamina"})
    assert sse_server.headers[-1].get("x-trace") == "trace-7"
    failed = requests.post(
        f"{base_url}/tool-runtime/invoke", json={"tool_name": "explode", "kwargs": {"reason": "boom"}}, timeout=10
    ).json()
    assert "exploded: boom" in failed["error_message"]
    assert requests.delete(f"{base_url}/toolgroups/sse", timeout=10).status_code == 200
    assert_openai_error(requests.get(f"{base_url}/toolgroups/sse", timeout=10), 404, param="toolgroup_id")


def test_a_server_that_is_down_is_a_clear_error(base_url: str) -> None:
    down = f"http://127.0.0.1:{free_port()}/mcp"
    response = requests.get(f"{base_url}/tool-runtime/list-tools", params={"mcp_endpoint": down}, timeout=10)
    error = assert_openai_error(response, 503, code="tool_server_error", message_contains="cannot be reached")
    assert down in error["message"]
    requests.post(
        f"{base_url}/toolgroups",
        json={"toolgroup_id": "gone", "provider_id": "mcp", "mcp_endpoint": {"uri": down}},
        timeout=10,
    )
    response = requests.get(f"{base_url}/tool-runtime/list-tools", params={"tool_group_id": "gone"}, timeout=10)
    assert_openai_error(response, 503, code="tool_server_error")
    # Every other group's tools are still listed when one server is down.
    assert {t["name"] for t in requests.get(f"{base_url}/tools", timeout=10).json()["data"]} >= {"add", "slow"}
    requests.delete(f"{base_url}/toolgroups/gone", timeout=10)


def test_a_slow_server_is_a_timeout_result(http_server: McpServer, sse_server: McpServer) -> None:
    with serve(stack_config(http_server, sse_server, timeout=2)) as base_url:
        slow = requests.post(
            f"{base_url}/tool-runtime/invoke", json={"tool_name": "slow", "kwargs": {"seconds": 4}}, timeout=20
        )
    assert slow.status_code == 200
    assert slow.json()["error_code"] == 504 and "did not answer within 2s" in slow.json()["error_message"]


def test_bad_input_and_unknown_ids(base_url: str, http_server: McpServer) -> None:
    invoke = f"{base_url}/tool-runtime/invoke"
    assert_openai_error(requests.post(invoke, json={"tool_name": "add"}, timeout=10), 400, param="kwargs")
    assert_openai_error(requests.post(invoke, json={"tool_name": "add", "kwargs": []}, timeout=10), 400, param="kwargs")
    assert_openai_error(requests.post(invoke, json={"tool_name": "nope", "kwargs": {}}, timeout=10), 404)
    assert_openai_error(requests.get(f"{base_url}/tools/nope", timeout=10), 404, param="tool_name")
    assert_openai_error(requests.get(f"{base_url}/toolgroups/nope", timeout=10), 404, param="toolgroup_id")
    assert_openai_error(requests.delete(f"{base_url}/toolgroups/nope", timeout=10), 404, param="toolgroup_id")
    assert_openai_error(
        requests.get(f"{base_url}/tool-runtime/list-tools", params={"tool_group_id": "nope"}, timeout=10), 404
    )
    group = {"toolgroup_id": "x", "provider_id": "nope", "mcp_endpoint": {"uri": http_server.url}}
    assert_openai_error(requests.post(f"{base_url}/toolgroups", json=group, timeout=10), 400, param="provider_id")
    group = {"toolgroup_id": "mcp::demo", "provider_id": "mcp", "mcp_endpoint": {"uri": http_server.url}}
    assert_openai_error(requests.post(f"{base_url}/toolgroups", json=group, timeout=10), 409, param="toolgroup_id")
    assert_openai_error(requests.delete(f"{base_url}/toolgroups/mcp::demo", timeout=10), 400, param="toolgroup_id")
    response = requests.get(f"{base_url}/tool-runtime/list-tools", params={"mcp_endpoint": "ftp://x/mcp"}, timeout=10)
    assert_openai_error(response, 400, param="server_url")
    # Found by schemathesis: a URL naming no host got as far as the HTTP client, a 502 blaming the tool server.
    response = requests.get(f"{base_url}/tool-runtime/list-tools", params={"mcp_endpoint": "http://"}, timeout=10)
    assert_openai_error(response, 400, param="server_url")

    beta = base_url.removesuffix("/v1") + "/v1beta"
    assert_openai_error(requests.get(f"{beta}/connectors/nope", timeout=10), 404, param="connector_id")
    assert_openai_error(requests.get(f"{beta}/connectors/nope/tools", timeout=10), 404, param="connector_id")
    bad = requests.post(f"{beta}/connectors", json={"connector_id": "c", "url": "not-a-url"}, timeout=10)
    assert_openai_error(bad, 400, param="url")
    for hostless in ("http://", "https://:8080/mcp"):
        bad = requests.post(f"{beta}/connectors", json={"connector_id": "c", "url": hostless}, timeout=10)
        assert_openai_error(bad, 400, param="url")
    made = requests.post(f"{beta}/connectors", json={"connector_id": "c", "url": http_server.url}, timeout=10)
    assert made.status_code == 200 and made.json()["connector_id"] == "c"
    assert_openai_error(
        requests.post(f"{beta}/connectors", json={"connector_id": "c", "url": http_server.url}, timeout=10), 409
    )
    assert requests.delete(f"{beta}/connectors/c", timeout=10).json() == {
        "id": "c",
        "object": "connector",
        "deleted": True,
    }
    assert_openai_error(requests.delete(f"{beta}/connectors/sse-demo", timeout=10), 400, param="connector_id")


async def test_mcp_functions_for_the_responses_api(http_server: McpServer, sse_server: McpServer) -> None:
    async with start_stack(resolve(stack_config(http_server, sse_server), "<test>")) as stack:
        tools = stack.api(ToolRuntimeRouter)
        listed = await tools.list_mcp_tools(server_url=http_server.url, headers={"X-Team": "t1"}, allowed_tools=["add"])
        assert [t.name for t in listed] == ["add"]
        result = await tools.call_mcp_tool("add", {"a": 1, "b": 2}, server_url=http_server.url, authorization="abc")
        assert result.output == "3" and result.error is None
        assert http_server.headers[-1].get("authorization") == "Bearer abc"
        result = await tools.call_mcp_tool("reverse", {"text": "ab"}, connector_id="sse-demo")
        assert result.output == "ba"
        result = await tools.call_mcp_tool("explode", {"reason": "x"}, connector_id="sse-demo")
        assert result.output is None and "exploded: x" in (result.error or "")
        down = await tools.call_mcp_tool("add", {}, server_url=f"http://127.0.0.1:{free_port()}/mcp")
        assert down.output is None and "cannot be reached" in (down.error or "")


def test_registered_groups_and_connectors_survive_a_restart(
    http_server: McpServer, sse_server: McpServer, tmp_path: Path
) -> None:
    config = {**stack_config(http_server, sse_server), "storage": {"dir": str(tmp_path)}}
    group = {"toolgroup_id": "kept", "provider_id": "mcp", "mcp_endpoint": {"uri": sse_server.url}}
    connector = {"connector_id": "kept", "url": http_server.url, "authorization": "kept-secret"}
    with serve(config) as url:
        beta = url.removesuffix("/v1") + "/v1beta"
        assert requests.post(f"{url}/toolgroups", json=group, timeout=10).status_code == 200
        assert requests.post(f"{beta}/connectors", json=connector, timeout=10).status_code == 200
        routes = {r["path"] for r in requests.get(f"{url}/inspect/routes", timeout=10).json()["data"]}
        assert {"/v1beta/connectors", "/v1/tool-runtime/invoke", "/v1/prompts"} <= routes
        assert "/v1beta/connectors/{connector_id}" in requests.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    with serve(config) as url:
        beta = url.removesuffix("/v1") + "/v1beta"
        assert requests.get(f"{url}/toolgroups/kept", timeout=10).json()["mcp_endpoint"]["uri"] == sse_server.url
        listed = requests.get(f"{beta}/connectors", timeout=10).json()["data"]
        assert [c["connector_id"] for c in listed] == ["sse-demo", "kept"] and "kept-secret" not in str(listed)
        tools = requests.get(f"{beta}/connectors/kept/tools", timeout=10).json()["data"]
        assert {t["name"] for t in tools} == {"add", "slow"}
        assert http_server.headers[-1].get("authorization") == "Bearer kept-secret"


def test_config_errors_name_the_key(http_server: McpServer) -> None:
    connectors = {"tool_runtime": {"connectors": [{"connector_id": "c", "url": http_server.url}]}}
    with pytest.raises(ConfigError, match=r"apis.tool_runtime.connectors: .*remote::model-context-protocol"):
        serve({"apis": connectors}).__enter__()
    group = {"toolgroup_id": "g", "provider_id": "nope", "mcp_endpoint": {"uri": http_server.url}}
    with pytest.raises(ConfigError, match=r"apis.tool_runtime.toolgroups: 'g' names unknown provider 'nope'"):
        serve({"apis": {"tool_runtime": {"toolgroups": [group]}}}).__enter__()
