"""The tool runtime API (Llama Stack's): server-side tools that plugins provide (`lamina-tool-mcp`: MCP servers),
grouped in tool groups, plus connectors (registered MCP servers). The Responses API's `mcp` tools go through
`ToolRuntimeRouter.list_mcp_tools` and `call_mcp_tool` (docs/apis.md)."""

from __future__ import annotations

from typing import Any

from lamina.apis.tool_runtime.router import ToolRuntimeRouter
from lamina.apis.tool_runtime.routes import ROUTES
from lamina.apis.tool_runtime.types import ToolRuntimeConfig
from lamina.config import ConfigError
from lamina.specs import ApiSpec, RouterDeps


async def create_router(config: ToolRuntimeConfig, providers: dict[str, Any], deps: RouterDeps) -> ToolRuntimeRouter:
    for group in config.toolgroups:
        if group.provider_id not in providers:
            raise ConfigError(
                f"{deps.source}: apis.tool_runtime.toolgroups: '{group.toolgroup_id}' names unknown provider "
                f"'{group.provider_id}'"
            )
    if config.mcp_provider_id is not None and config.mcp_provider_id not in providers:
        raise ConfigError(f"{deps.source}: apis.tool_runtime.mcp_provider_id: no provider '{config.mcp_provider_id}'")
    if config.connectors and not any(getattr(p, "serves_mcp", False) for p in providers.values()):
        raise ConfigError(
            f"{deps.source}: apis.tool_runtime.connectors: connectors are MCP servers, and no tool_runtime provider "
            "talks to MCP; add one of type remote::model-context-protocol (pip install lamina-tool-mcp)"
        )
    return ToolRuntimeRouter(config, providers, deps.storage.kv)


API = ApiSpec(
    name="tool_runtime",
    description="Llama Stack tool runtime: tool groups, tools, tool invocation and MCP connectors",
    config=ToolRuntimeConfig,
    router=create_router,
    routes=ROUTES,
)
