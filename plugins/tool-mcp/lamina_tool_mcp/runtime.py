"""Talking to MCP servers with the `mcp` package's client: one session per call (servers are remote and calls are
few), a timeout around each, failures turned into errors that name the server, and tool lists cached."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
from lamina import LaminaError
from lamina.apis.tool_runtime.types import ServerInfo, ToolDef, ToolEndpoint, ToolInvocationResult, tool_server_error
from mcp import ClientSession, McpError
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

log = logging.getLogger("lamina")


def shown(url: str) -> str:
    """A server's URL as errors and logs show it: no credentials, no query string."""
    parts = urlsplit(url)
    return f"'{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}'"


def transport_of(endpoint: ToolEndpoint) -> str:
    if endpoint.transport is not None:
        return endpoint.transport
    return "sse" if urlsplit(endpoint.url or "").path.rstrip("/").endswith("/sse") else "streamable_http"


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups: anyio task groups wrap what actually failed."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _explain(server: str, exc: BaseException, timeout: float) -> LaminaError:
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


class McpToolRuntime:
    serves_mcp = True

    def __init__(self, timeout_seconds: float, list_tools_ttl_seconds: float) -> None:
        self.timeout = timeout_seconds
        self.ttl = list_tools_ttl_seconds
        self._tools: dict[str, tuple[float, list[ToolDef]]] = {}  # cache key -> (expiry, tools)

    @asynccontextmanager
    async def _session(self, endpoint: ToolEndpoint) -> AsyncIterator[tuple[ClientSession, Any]]:
        if not endpoint.url:
            raise LaminaError("an MCP tool group needs `mcp_endpoint: {uri: ...}`", status=400, param="mcp_endpoint")
        headers = dict(endpoint.headers)
        if transport_of(endpoint) == "sse":
            streams = sse_client(endpoint.url, headers=headers, timeout=self.timeout, sse_read_timeout=self.timeout)
            async with streams as (read, write), ClientSession(read, write) as session:
                yield session, await session.initialize()
        else:
            client = create_mcp_http_client(headers=headers, timeout=httpx.Timeout(self.timeout))
            async with (
                client,
                streamable_http_client(endpoint.url, http_client=client) as (read, write, _),
                ClientSession(read, write) as session,
            ):
                yield session, await session.initialize()

    async def _call(
        self, endpoint: ToolEndpoint, action: str, tool: str = "", arguments: dict[str, Any] | None = None
    ) -> Any:
        server = shown(endpoint.url or "")
        try:
            async with asyncio.timeout(self.timeout), self._session(endpoint) as (session, init):
                if action == "list":
                    tools = []
                    cursor = None
                    while True:
                        page = await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
                        tools += page.tools
                        cursor = page.nextCursor
                        if not cursor:
                            return tools
                if action == "call":
                    return await session.call_tool(tool, arguments or {})
                return init
        except (Exception, BaseExceptionGroup) as exc:
            error = _explain(server, exc, self.timeout)
            log.warning("%s", error.message)
            raise error from None

    def _cache_key(self, endpoint: ToolEndpoint) -> str:
        # Different credentials may see different tools: they are part of the key (hashed, never kept in clear).
        material = json.dumps([endpoint.url, sorted(endpoint.headers.items()), transport_of(endpoint)])
        return hashlib.sha256(material.encode()).hexdigest()

    async def list_tools(self, endpoint: ToolEndpoint) -> list[ToolDef]:
        key = self._cache_key(endpoint)
        cached = self._tools.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return [tool.model_copy() for tool in cached[1]]
        tools = [
            ToolDef(
                name=tool.name,
                description=tool.description,
                input_schema=tool.inputSchema,
                output_schema=tool.outputSchema,
                metadata={"endpoint": endpoint.url},
            )
            for tool in await self._call(endpoint, "list")
        ]
        if self.ttl > 0:
            self._tools[key] = (time.monotonic() + self.ttl, tools)
        return [tool.model_copy() for tool in tools]

    async def invoke_tool(
        self, endpoint: ToolEndpoint, tool_name: str, arguments: dict[str, Any]
    ) -> ToolInvocationResult:
        result = await self._call(endpoint, "call", tool_name, arguments)
        content: list[dict[str, Any]] = [item.model_dump(mode="json", exclude_none=True) for item in result.content]
        if result.isError:
            text = "\n".join(part.get("text", "") for part in content if part.get("type") == "text")
            return ToolInvocationResult(
                content=content, error_message=text or "the tool reported an error", error_code=1
            )
        metadata = {"structured_content": result.structuredContent} if result.structuredContent else None
        return ToolInvocationResult(content=content, metadata=metadata)

    async def server_info(self, endpoint: ToolEndpoint) -> ServerInfo:
        init = await self._call(endpoint, "info")
        return ServerInfo(
            name=init.serverInfo.name,
            version=init.serverInfo.version,
            description=getattr(init, "instructions", None),
        )
