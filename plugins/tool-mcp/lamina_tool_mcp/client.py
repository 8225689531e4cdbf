"""Everything that needs the `mcp` package (and httpx): imported off the event loop, once, by `runtime`, because
importing `mcp` takes seconds and must neither delay start-up nor stall requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from lamina import LaminaError, observe
from lamina.apis.tool_runtime.types import ToolEndpoint, tool_server_error
from mcp import ClientSession, McpError
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


@asynccontextmanager
async def session(endpoint: ToolEndpoint, transport: str, timeout: float) -> AsyncIterator[tuple[ClientSession, Any]]:
    """An initialized MCP session with the server at `endpoint`, and the server's answer to `initialize`."""
    assert endpoint.url is not None
    headers = {**observe.propagation_headers(), **endpoint.headers}  # the trace goes on to the server
    if transport == "sse":
        streams = sse_client(endpoint.url, headers=headers, timeout=timeout, sse_read_timeout=timeout)
        async with streams as (read, write), ClientSession(read, write) as opened:
            yield opened, await opened.initialize()
    else:
        client = create_mcp_http_client(headers=headers, timeout=httpx.Timeout(timeout))
        async with (
            client,
            streamable_http_client(endpoint.url, http_client=client) as (read, write, _),
            ClientSession(read, write) as opened,
        ):
            yield opened, await opened.initialize()


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups: anyio task groups wrap what actually failed."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def explain(server: str, exc: BaseException, timeout: float) -> LaminaError:
    """A failure of a call to an MCP server as the error a client should see: it names the server."""
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, LaminaError):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, TimeoutError | httpx.TimeoutException):
            return tool_server_error(server, f"did not answer within {timeout:g}s", status=504)
    for leaf in leaves:
        if isinstance(leaf, httpx.ConnectError | ConnectionError):
            return tool_server_error(server, f"cannot be reached ({type(leaf).__name__}: {leaf})", status=503)
    for leaf in leaves:
        if isinstance(leaf, httpx.HTTPStatusError):
            return tool_server_error(server, f"answered HTTP {leaf.response.status_code}", status=502)
    for leaf in leaves:
        if isinstance(leaf, McpError):
            return tool_server_error(server, f"MCP error: {leaf.error.message}", status=502)
    first = leaves[0]
    return tool_server_error(server, f"failed: {type(first).__name__}: {first}", status=502)
