"""The tool runtime API's wire models (Llama Stack's toolgroups, tools, tool runtime and connectors) and config."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lamina.access import Owner
from lamina.errors import LaminaError
from lamina.specs import ProviderConfig

Transport = Literal["streamable_http", "sse"]


class URL(BaseModel):
    uri: str = Field(min_length=1)


class ToolDef(BaseModel):
    toolgroup_id: str | None = None
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class ToolInvocationResult(BaseModel):
    """A tool's answer. A tool that failed, or whose server could not be reached, is a result with
    `error_message` (and `error_code`), not an HTTP error: the caller (a model, an agent) reads it."""

    content: str | list[dict[str, Any]] | None = None
    error_message: str | None = None
    error_code: int | None = None
    metadata: dict[str, Any] | None = None


class ToolEndpoint(BaseModel):
    """Where a provider finds a group's tools: what it gets for every call."""

    url: str | None = None  # an MCP server's URL (None for providers whose tools need none)
    headers: dict[str, str] = {}  # sent with every request to the server (Authorization among them)
    transport: Transport | None = None  # None: the provider picks (SSE for URLs ending in /sse)
    args: dict[str, Any] = {}  # the toolgroup's `args`


class RegisterToolGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    toolgroup_id: str = Field(min_length=1, pattern=r"^[^\s/]+$")
    provider_id: str = Field(min_length=1)
    mcp_endpoint: URL | None = None
    args: dict[str, Any] | None = None


class ToolGroup(BaseModel):
    identifier: str
    provider_resource_id: str | None = None
    provider_id: str
    type: Literal["tool_group"] = "tool_group"
    mcp_endpoint: URL | None = None
    args: dict[str, Any] | None = None
    owner: Owner | None = None  # who registered it (auth); None: the run config's, or made while auth was off


class ToolGroupList(BaseModel):
    data: list[ToolGroup]


class ToolDefList(BaseModel):
    data: list[ToolDef]


class ListToolsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    toolgroup_id: str | None = None


class ListRuntimeToolsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool_group_id: str | None = None
    mcp_endpoint: str | None = Field(None, description="an MCP server's URL (also accepted as mcp_endpoint[uri])")
    authorization: str | None = Field(None, description="a token sent to the MCP server as `Authorization: Bearer`")


class InvokeTool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    tool_name: str = Field(min_length=1)
    kwargs: dict[str, Any]
    authorization: str | None = None


class ConnectorInput(BaseModel):
    """A connector (a registered MCP server): in the run config's `apis.tool_runtime.connectors`, or
    `POST /v1beta/connectors`. `headers` and `authorization` go to the server and are never shown."""

    model_config = ConfigDict(extra="forbid", strict=True)

    connector_id: str = Field(min_length=1, pattern=r"^[^\s/]+$")
    connector_type: Literal["mcp"] = "mcp"
    url: str = Field(min_length=1, pattern=r"^https?://")
    server_label: str | None = None
    headers: dict[str, str] = {}
    authorization: str | None = None
    transport: Transport | None = None

    @field_validator("url")
    @classmethod
    def _has_host(cls, url: str) -> str:
        if not has_host(url):
            raise ValueError("the connector's URL names no host")
        return url


def has_host(url: str) -> bool:
    """Whether a URL names a server to connect to ('http://' and 'http://:80' do not)."""
    try:
        return bool(urlsplit(url).hostname)
    except ValueError:  # a malformed port or IPv6 literal
        return False


class ConnectorRecord(ConnectorInput):
    """What the storage keeps per connector registered at run time."""

    owner: Owner | None = None


class Connector(BaseModel):
    connector_type: Literal["mcp"] = "mcp"
    connector_id: str
    url: str
    server_label: str | None = None
    server_name: str | None = None
    server_description: str | None = None
    server_version: str | None = None
    owner: Owner | None = None


class ConnectorList(BaseModel):
    data: list[Connector]


class ConnectorDeleted(BaseModel):
    id: str
    object: Literal["connector"] = "connector"
    deleted: bool = True


class AuthorizationQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    authorization: str | None = None


class ServerInfo(BaseModel):
    """What an MCP server says about itself when a session starts."""

    name: str | None = None
    version: str | None = None
    description: str | None = None


class McpCallResult(BaseModel):
    """`ToolRuntimeRouter.call_mcp_tool`'s answer: the tool's text output, or why there is none."""

    output: str | None = None
    error: str | None = None


class ToolRuntimeConfig(ProviderConfig):
    """`apis.tool_runtime`: tool groups and connectors known from start-up, and the provider for MCP servers."""

    toolgroups: list[RegisterToolGroup] = Field(default_factory=list)
    connectors: list[ConnectorInput] = Field(default_factory=list)
    mcp_provider_id: str | None = Field(
        None, description="the provider that talks to MCP servers; default: the first one that can"
    )


def tool_server_error(server: str, message: str, *, status: int = 503) -> LaminaError:
    """A tool server that could not be reached (503), timed out (504) or answered nonsense (502)."""
    return LaminaError(
        f"tool server {server}: {message}", status=status, type="upstream_error", code="tool_server_error"
    )
