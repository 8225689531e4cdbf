"""What a tool runtime provider implements: list the tools at an endpoint, and run one. Plugins add server-side tools
this way (`lamina-tool-mcp` serves MCP servers); the router keeps the tool groups and connectors, and hands the
provider a `ToolEndpoint` (server URL, headers, transport, the group's `args`) for every call:

    serves_mcp: bool
        True when the provider talks to MCP servers: the router sends the Responses API's `mcp` tools and the
        connectors to the first such provider (or `apis.tool_runtime.mcp_provider_id`).

    async def list_tools(self, endpoint: ToolEndpoint) -> list[ToolDef]
        The tools at `endpoint` (`toolgroup_id` is filled by the router). A server that cannot be reached, times
        out or answers nonsense: raise `tool_server_error(...)` (a 503, 504 or 502 naming the server).

    async def invoke_tool(self, endpoint: ToolEndpoint, tool_name: str, arguments: dict) -> ToolInvocationResult
        Run a tool. A tool that reports an error is a result with `error_message`; a server that fails is
        `tool_server_error(...)`, which the router also turns into a result with `error_message`.

    async def server_info(self, endpoint: ToolEndpoint) -> ServerInfo          (optional)
        The server's name, version and description, shown by `GET /v1beta/connectors/{id}`.

Never log `endpoint.headers`: they carry credentials.
"""

from __future__ import annotations

from typing import Any, Protocol

from lamina.apis.tool_runtime.types import ToolDef, ToolEndpoint, ToolInvocationResult


class ToolRuntimeProvider(Protocol):
    serves_mcp: bool

    async def list_tools(self, endpoint: ToolEndpoint) -> list[ToolDef]: ...

    async def invoke_tool(
        self, endpoint: ToolEndpoint, tool_name: str, arguments: dict[str, Any]
    ) -> ToolInvocationResult: ...
