"""remote::model-context-protocol — the tools of MCP servers, for Lamina's tool runtime API.

Only pydantic and lamina are imported here; the `mcp` package (and httpx, starlette) is imported when the provider
is created, so a stack that does not use it pays nothing for it.
"""

from __future__ import annotations

from typing import Any

import lamina
from pydantic import Field


class McpConfig(lamina.ProviderConfig):
    timeout_seconds: float = Field(30, gt=0, description="how long one connection and call to a server may take")
    list_tools_ttl_seconds: float = Field(
        60, ge=0, description="how long a server's tool list is reused before asking again (0: never reused)"
    )


async def create(config: McpConfig, deps: lamina.Deps) -> Any:
    from lamina_tool_mcp.runtime import McpToolRuntime

    return McpToolRuntime(config.timeout_seconds, config.list_tools_ttl_seconds)


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="tool_runtime",
            type="remote::model-context-protocol",
            config=McpConfig,
            create=create,
            description="Tools of MCP servers (streamable HTTP and SSE)",
        )
    ]
