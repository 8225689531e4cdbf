"""The tool runtime router: tool groups and connectors (from the run config, and registered at run time in the
stack's storage), tool lookup, invocation, and the MCP functions the Responses API calls.

Every read of a stored tool group goes through `fetch_toolgroup`, of a connector through `fetch_connector`, and
listings through `visible_toolgroups` / `visible_connectors`: that is where who may see them (`owner`) is checked
once there is auth. Credentials (`authorization`, connector `headers`) go to tool servers and nowhere else: not to
listings, not to errors, not to logs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lamina import auth
from lamina.access import Owner
from lamina.apis.tool_runtime.provider import ToolRuntimeProvider
from lamina.apis.tool_runtime.types import (
    Connector,
    ConnectorInput,
    ConnectorRecord,
    McpCallResult,
    RegisterToolGroup,
    ServerInfo,
    ToolDef,
    ToolEndpoint,
    ToolGroup,
    ToolInvocationResult,
    ToolRuntimeConfig,
    has_host,
)
from lamina.errors import LaminaError, bad_request, conflict, not_found
from lamina.storage import KVStore, Registry

log = logging.getLogger("lamina")


def bearer(authorization: str | None) -> dict[str, str]:
    """`authorization` as a header: a bare token is sent as `Bearer <token>`."""
    if not authorization:
        return {}
    return {"Authorization": authorization if " " in authorization.strip() else f"Bearer {authorization}"}


def _group(request: RegisterToolGroup, owner: Owner | None = None) -> ToolGroup:
    return ToolGroup(
        identifier=request.toolgroup_id,
        provider_resource_id=request.toolgroup_id,
        provider_id=request.provider_id,
        mcp_endpoint=request.mcp_endpoint,
        args=request.args,
        owner=owner,
    )


def _shown_group(group: ToolGroup) -> ToolGroup:
    """A tool group as listings show it: the values of `args.headers` (credentials, often) masked."""
    headers = (group.args or {}).get("headers")
    if not isinstance(headers, dict):
        return group
    return group.model_copy(update={"args": {**(group.args or {}), "headers": dict.fromkeys(headers, "***")}})


def _connector(record: ConnectorInput, info: ServerInfo | None = None, owner: Owner | None = None) -> Connector:
    return Connector(
        connector_id=record.connector_id,
        url=record.url,
        server_label=record.server_label,
        server_name=info.name if info else None,
        server_description=info.description if info else None,
        server_version=info.version if info else None,
        owner=owner,
    )


class ToolRuntimeRouter:
    def __init__(self, config: ToolRuntimeConfig, providers: dict[str, ToolRuntimeProvider], kv: KVStore) -> None:
        self.config = config
        self.providers = providers
        self.toolgroups = Registry(kv, "toolgroups/", ToolGroup, key=lambda group: group.identifier)
        self.connectors = Registry(kv, "connectors/", ConnectorRecord, key=lambda c: c.connector_id)
        self.configured_groups = {g.toolgroup_id: _group(g) for g in config.toolgroups}
        self.configured_connectors = {c.connector_id: ConnectorRecord(**c.model_dump()) for c in config.connectors}

    # -- tool groups ------------------------------------------------------------------------------------------

    async def fetch_toolgroup(self, toolgroup_id: str, *, param: str = "toolgroup_id") -> ToolGroup:
        """The one way to a tool group by id: one the caller may not read does not exist for it."""
        group = self.configured_groups.get(toolgroup_id) or await self.toolgroups.get(toolgroup_id)
        if group is None or not auth.can("read", "toolgroup", toolgroup_id, group.owner):
            raise not_found(f"tool group '{toolgroup_id}' not found", param=param)
        return group

    async def visible_toolgroups(self) -> list[ToolGroup]:
        """Every tool group the caller may list."""
        stored = [g for g in await self.toolgroups.list() if g.identifier not in self.configured_groups]
        groups = [*self.configured_groups.values(), *stored]
        return [g for g in groups if auth.can("read", "toolgroup", g.identifier, g.owner)]

    async def register_toolgroup(self, request: RegisterToolGroup) -> ToolGroup:
        owner = auth.owner()
        auth.require("create", "toolgroup", request.toolgroup_id, owner)
        if request.provider_id not in self.providers:
            raise bad_request(
                f"no tool runtime provider '{request.provider_id}'; known: {', '.join(self.providers) or 'none'}",
                param="provider_id",
            )
        if request.toolgroup_id in self.configured_groups or await self.toolgroups.get(request.toolgroup_id):
            raise conflict(f"tool group '{request.toolgroup_id}' already exists", param="toolgroup_id")
        return _shown_group(await self.toolgroups.put(_group(request, owner)))

    async def list_toolgroups(self) -> list[ToolGroup]:
        return [_shown_group(group) for group in await self.visible_toolgroups()]

    async def get_toolgroup(self, toolgroup_id: str) -> ToolGroup:
        return _shown_group(await self.fetch_toolgroup(toolgroup_id))

    async def unregister_toolgroup(self, toolgroup_id: str) -> None:
        group = await self.fetch_toolgroup(toolgroup_id)
        auth.require("delete", "toolgroup", toolgroup_id, group.owner)
        if toolgroup_id in self.configured_groups:
            raise bad_request(
                f"tool group '{toolgroup_id}' comes from the run config; it cannot be unregistered",
                param="toolgroup_id",
            )
        await self.toolgroups.delete(toolgroup_id)

    def _group_endpoint(self, group: ToolGroup, authorization: str | None) -> tuple[ToolRuntimeProvider, ToolEndpoint]:
        provider = self.providers.get(group.provider_id)
        if provider is None:
            raise LaminaError(
                f"tool group '{group.identifier}' names provider '{group.provider_id}', which is not configured",
                status=503,
                type="server_error",
            )
        args = dict(group.args or {})
        headers = {str(k): str(v) for k, v in (args.pop("headers", None) or {}).items()}
        endpoint = ToolEndpoint(
            url=group.mcp_endpoint.uri if group.mcp_endpoint else None,
            headers={**headers, **bearer(authorization)},
            transport=args.pop("transport", None),
            args=args,
        )
        return provider, endpoint

    # -- tools ------------------------------------------------------------------------------------------------

    async def group_tools(self, group: ToolGroup, authorization: str | None = None) -> list[ToolDef]:
        provider, endpoint = self._group_endpoint(group, authorization)
        tools = await provider.list_tools(endpoint)
        return [tool.model_copy(update={"toolgroup_id": group.identifier}) for tool in tools]

    async def list_tools(self, toolgroup_id: str | None = None, authorization: str | None = None) -> list[ToolDef]:
        """The tools of one group, or of every group; a group whose server fails is left out of the latter (and
        logged), so one server that is down does not hide every other tool."""
        if toolgroup_id is not None:
            return await self.group_tools(await self.fetch_toolgroup(toolgroup_id), authorization)

        async def of(group: ToolGroup) -> list[ToolDef]:
            try:
                return await self.group_tools(group, authorization)
            except LaminaError as exc:
                log.warning("tool group %s left out of the tool listing: %s", group.identifier, exc.message)
                return []

        # Concurrently: one slow server costs its timeout once, not once per group after it.
        listed = await asyncio.gather(*(of(group) for group in await self.visible_toolgroups()))
        return [tool for tools in listed for tool in tools]

    async def get_tool(self, tool_name: str) -> ToolDef:
        for tool in await self.list_tools():
            if tool.name == tool_name:
                return tool
        raise not_found(f"tool '{tool_name}' not found in any tool group", param="tool_name")

    async def list_runtime_tools(
        self, tool_group_id: str | None, mcp_endpoint: str | None, authorization: str | None
    ) -> list[ToolDef]:
        if mcp_endpoint is not None:
            return await self.list_mcp_tools(server_url=mcp_endpoint, authorization=authorization)
        return await self.list_tools(tool_group_id, authorization)

    async def invoke_tool(
        self, tool_name: str, kwargs: dict[str, Any], authorization: str | None = None
    ) -> ToolInvocationResult:
        tool = await self.get_tool(tool_name)
        assert tool.toolgroup_id is not None
        provider, endpoint = self._group_endpoint(await self.fetch_toolgroup(tool.toolgroup_id), authorization)
        return await _invoke(provider, endpoint, tool_name, kwargs)

    # -- connectors -------------------------------------------------------------------------------------------

    async def fetch_connector(self, connector_id: str, *, param: str = "connector_id") -> ConnectorRecord:
        """The one way to a connector by id: one the caller may not read does not exist for it."""
        record = self.configured_connectors.get(connector_id) or await self.connectors.get(connector_id)
        if record is None or not auth.can("read", "connector", connector_id, record.owner):
            raise not_found(f"connector '{connector_id}' not found", param=param)
        return record

    async def visible_connectors(self) -> list[ConnectorRecord]:
        stored = [c for c in await self.connectors.list() if c.connector_id not in self.configured_connectors]
        records = [*self.configured_connectors.values(), *stored]
        return [c for c in records if auth.can("read", "connector", c.connector_id, c.owner)]

    async def register_connector(self, request: ConnectorInput) -> Connector:
        owner = auth.owner()
        auth.require("create", "connector", request.connector_id, owner)
        if request.connector_id in self.configured_connectors or await self.connectors.get(request.connector_id):
            raise conflict(f"connector '{request.connector_id}' already exists", param="connector_id")
        await self.connectors.put(ConnectorRecord(**request.model_dump(), owner=owner))
        return _connector(request, owner=owner)

    async def delete_connector(self, connector_id: str) -> None:
        record = await self.fetch_connector(connector_id)
        auth.require("delete", "connector", connector_id, record.owner)
        if connector_id in self.configured_connectors:
            raise bad_request(
                f"connector '{connector_id}' comes from the run config; it cannot be deleted", param="connector_id"
            )
        await self.connectors.delete(connector_id)

    async def list_connectors(self) -> list[Connector]:
        return [_connector(record, owner=record.owner) for record in await self.visible_connectors()]

    async def get_connector(self, connector_id: str, authorization: str | None = None) -> Connector:
        record = await self.fetch_connector(connector_id)
        provider, endpoint = self._mcp_endpoint(record.url, record.headers, record.authorization, authorization)
        endpoint.transport = record.transport
        server_info = getattr(provider, "server_info", None)
        info = await server_info(endpoint) if server_info is not None else None
        return _connector(record, info, record.owner)

    async def connector_tools(self, connector_id: str, authorization: str | None = None) -> list[ToolDef]:
        return await self.list_mcp_tools(connector_id=connector_id, authorization=authorization)

    async def connector_tool(self, connector_id: str, tool_name: str, authorization: str | None = None) -> ToolDef:
        for tool in await self.connector_tools(connector_id, authorization):
            if tool.name == tool_name:
                return tool
        raise not_found(f"connector '{connector_id}' has no tool '{tool_name}'", param="tool_name")

    # -- MCP, for the Responses API ---------------------------------------------------------------------------

    def _mcp_provider(self) -> ToolRuntimeProvider:
        wanted = self.config.mcp_provider_id
        if wanted is not None and wanted in self.providers:
            return self.providers[wanted]
        for provider in self.providers.values():
            if getattr(provider, "serves_mcp", False):
                return provider
        raise LaminaError(
            "no tool runtime provider that talks to MCP servers is configured; install lamina-tool-mcp and add "
            "a `remote::model-context-protocol` provider under providers.tool_runtime",
            status=503,
            type="server_error",
            code="no_mcp_provider",
        )

    def _mcp_endpoint(
        self, url: str, headers: dict[str, str] | None, *authorizations: str | None
    ) -> tuple[ToolRuntimeProvider, ToolEndpoint]:
        if not url.startswith(("http://", "https://")) or not has_host(url):
            raise bad_request(f"MCP server URL '{url}' is not an http(s) URL naming a host", param="server_url")
        merged = dict(headers or {})
        for authorization in authorizations:
            merged.update(bearer(authorization))
        return self._mcp_provider(), ToolEndpoint(url=url, headers=merged)

    async def _mcp_target(
        self,
        server_url: str | None,
        connector_id: str | None,
        headers: dict[str, str] | None,
        authorization: str | None,
    ) -> tuple[ToolRuntimeProvider, ToolEndpoint]:
        if (server_url is None) == (connector_id is None):
            raise bad_request("give exactly one of `server_url` and `connector_id`", param="server_url")
        if connector_id is not None:
            record = await self.fetch_connector(connector_id)
            provider, endpoint = self._mcp_endpoint(
                record.url, {**record.headers, **(headers or {})}, record.authorization, authorization
            )
            endpoint.transport = record.transport
            return provider, endpoint
        assert server_url is not None
        return self._mcp_endpoint(server_url, headers, authorization)

    async def list_mcp_tools(
        self,
        *,
        server_url: str | None = None,
        connector_id: str | None = None,
        headers: dict[str, str] | None = None,
        authorization: str | None = None,
        allowed_tools: list[str] | None = None,
    ) -> list[ToolDef]:
        """The tools of an MCP server, given by URL or by connector id, kept to `allowed_tools` when given.
        Raises a 503/504/502 (`code: tool_server_error`) naming the server when it is down, slow or broken; a 400
        for a bad URL; a 404 for an unknown connector."""
        provider, endpoint = await self._mcp_target(server_url, connector_id, headers, authorization)
        tools = await provider.list_tools(endpoint)
        if allowed_tools is not None:
            tools = [tool for tool in tools if tool.name in allowed_tools]
        return tools

    async def call_mcp_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        server_url: str | None = None,
        connector_id: str | None = None,
        headers: dict[str, str] | None = None,
        authorization: str | None = None,
    ) -> McpCallResult:
        """Run tool `name` of an MCP server: its text output, or an error string (a tool error, a server that is
        down or times out). Raises only for bad input (400) or an unknown connector (404)."""
        provider, endpoint = await self._mcp_target(server_url, connector_id, headers, authorization)
        result = await _invoke(provider, endpoint, name, arguments)
        if result.error_message is not None:
            return McpCallResult(error=result.error_message)
        return McpCallResult(output=_text(result.content))


async def _invoke(
    provider: ToolRuntimeProvider, endpoint: ToolEndpoint, tool_name: str, arguments: dict[str, Any]
) -> ToolInvocationResult:
    try:
        return await provider.invoke_tool(endpoint, tool_name, arguments)
    except LaminaError as exc:
        if exc.status < 500:
            raise
        return ToolInvocationResult(error_message=exc.message, error_code=exc.status)


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
