"""Talking to MCP servers (through `client`, the module that imports the `mcp` package): one session per call
(servers are remote and calls are few), a timeout around each, failures turned into errors that name the server,
and tool lists cached."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import logging
import time
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from lamina import LaminaError
from lamina.apis.tool_runtime.types import ServerInfo, ToolDef, ToolEndpoint, ToolInvocationResult

log = logging.getLogger("lamina")


def shown(url: str) -> str:
    """A server's URL as errors and logs show it: no credentials, no query string."""
    parts = urlsplit(url)
    return f"'{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}'"


def transport_of(endpoint: ToolEndpoint) -> str:
    if endpoint.transport is not None:
        return endpoint.transport
    return "sse" if urlsplit(endpoint.url or "").path.rstrip("/").endswith("/sse") else "streamable_http"


class McpToolRuntime:
    serves_mcp = True

    def __init__(self, timeout_seconds: float, list_tools_ttl_seconds: float) -> None:
        self.timeout = timeout_seconds
        self.ttl = list_tools_ttl_seconds
        self._tools: dict[str, tuple[float, list[ToolDef]]] = {}  # cache key -> (expiry, tools)
        self._client: asyncio.Task[ModuleType] | None = None

    async def _client_module(self) -> ModuleType:
        # `mcp` takes seconds to import (measured: it more than doubled the start-up of `lamina run starter`, even
        # imported in a thread), so it is imported at the first call to a server, in a thread: the event loop
        # keeps serving meanwhile. Concurrent first calls share the one import.
        if self._client is None:
            self._client = asyncio.create_task(asyncio.to_thread(importlib.import_module, "lamina_tool_mcp.client"))
        return await asyncio.shield(self._client)

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.gather(self._client, return_exceptions=True)

    async def _call(
        self, endpoint: ToolEndpoint, action: str, tool: str = "", arguments: dict[str, Any] | None = None
    ) -> Any:
        server = shown(endpoint.url or "")
        if not endpoint.url:
            raise LaminaError("an MCP tool group needs `mcp_endpoint: {uri: ...}`", status=400, param="mcp_endpoint")
        client = await self._client_module()
        try:
            async with (
                asyncio.timeout(self.timeout),
                client.session(endpoint, transport_of(endpoint), self.timeout) as (session, init),
            ):
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
            error: LaminaError = client.explain(server, exc, self.timeout)
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
