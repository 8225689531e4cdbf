"""The tool runtime API's HTTP routes: Llama Stack's `/v1/toolgroups`, `/v1/tools`, `/v1/tool-runtime/*` and
`/v1beta/connectors` (plus `POST`/`DELETE` of connectors, to register MCP servers at run time)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.tool_runtime.router import ToolRuntimeRouter
from lamina.apis.tool_runtime.types import (
    AuthorizationQuery,
    Connector,
    ConnectorDeleted,
    ConnectorInput,
    ConnectorList,
    InvokeTool,
    ListRuntimeToolsQuery,
    ListToolsQuery,
    RegisterToolGroup,
    ToolDef,
    ToolDefList,
    ToolGroup,
    ToolGroupList,
    ToolInvocationResult,
)
from lamina.errors import validation_error
from lamina.http import json_response, parse_body, route, router_of

Q = TypeVar("Q", bound=BaseModel)


def _tools(request: Request) -> ToolRuntimeRouter:
    return router_of(request, ToolRuntimeRouter)


def _query(request: Request, model: type[Q]) -> Q:
    # Llama Stack's clients send a URL object as `mcp_endpoint[uri]=...`.
    fields = {key.removesuffix("[uri]"): value for key, value in request.query_params.items()}
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def register_toolgroup(request: Request) -> Response:
    """Register a tool group served by a tool runtime provider (an MCP server: `mcp_endpoint`)."""
    body = await parse_body(request, RegisterToolGroup)
    return json_response(await _tools(request).register_toolgroup(body))


async def list_toolgroups(request: Request) -> Response:
    """List tool groups."""
    return json_response(ToolGroupList(data=await _tools(request).list_toolgroups()))


async def get_toolgroup(request: Request) -> Response:
    """Get a tool group."""
    return json_response(await _tools(request).get_toolgroup(request.path_params["toolgroup_id"]))


async def unregister_toolgroup(request: Request) -> Response:
    """Unregister a tool group."""
    await _tools(request).unregister_toolgroup(request.path_params["toolgroup_id"])
    return json_response(None)


async def list_tools(request: Request) -> Response:
    """List the tools of every tool group, or of `toolgroup_id`."""
    query = _query(request, ListToolsQuery)
    return json_response(ToolDefList(data=await _tools(request).list_tools(query.toolgroup_id)))


async def get_tool(request: Request) -> Response:
    """Get a tool by name."""
    return json_response(await _tools(request).get_tool(request.path_params["tool_name"]))


async def list_runtime_tools(request: Request) -> Response:
    """List the tools of a tool group, or of an MCP server given by `mcp_endpoint`."""
    query = _query(request, ListRuntimeToolsQuery)
    tools = await _tools(request).list_runtime_tools(query.tool_group_id, query.mcp_endpoint, query.authorization)
    return json_response(ToolDefList(data=tools))


async def invoke_tool(request: Request) -> Response:
    """Run a tool; a failing tool or tool server answers a result with `error_message`."""
    body = await parse_body(request, InvokeTool)
    return json_response(await _tools(request).invoke_tool(body.tool_name, body.kwargs, body.authorization))


async def list_connectors(request: Request) -> Response:
    """List connectors (registered MCP servers)."""
    return json_response(ConnectorList(data=await _tools(request).list_connectors()))


async def register_connector(request: Request) -> Response:
    """Register a connector at run time (Lamina's addition: Llama Stack's come from the run config only)."""
    return json_response(await _tools(request).register_connector(await parse_body(request, ConnectorInput)))


async def get_connector(request: Request) -> Response:
    """Get a connector, with what its MCP server says about itself."""
    query = _query(request, AuthorizationQuery)
    return json_response(await _tools(request).get_connector(request.path_params["connector_id"], query.authorization))


async def delete_connector(request: Request) -> Response:
    """Delete a connector registered at run time."""
    connector_id = request.path_params["connector_id"]
    await _tools(request).delete_connector(connector_id)
    return json_response(ConnectorDeleted(id=connector_id))


async def list_connector_tools(request: Request) -> Response:
    """List the tools of a connector's MCP server."""
    query = _query(request, AuthorizationQuery)
    tools = await _tools(request).connector_tools(request.path_params["connector_id"], query.authorization)
    return json_response(ToolDefList(data=tools))


async def get_connector_tool(request: Request) -> Response:
    """Get one tool of a connector's MCP server."""
    query = _query(request, AuthorizationQuery)
    params = request.path_params
    return json_response(
        await _tools(request).connector_tool(params["connector_id"], params["tool_name"], query.authorization)
    )


BETA = "/v1beta"
ROUTES = [
    route("POST", "/toolgroups", register_toolgroup, body=RegisterToolGroup, response=ToolGroup),
    route("GET", "/toolgroups", list_toolgroups, response=ToolGroupList),
    route("GET", "/toolgroups/{toolgroup_id}", get_toolgroup, response=ToolGroup),
    route("DELETE", "/toolgroups/{toolgroup_id}", unregister_toolgroup),
    route("GET", "/tools", list_tools, response=ToolDefList, query=ListToolsQuery),
    route("GET", "/tools/{tool_name}", get_tool, response=ToolDef),
    route("GET", "/tool-runtime/list-tools", list_runtime_tools, response=ToolDefList, query=ListRuntimeToolsQuery),
    route("POST", "/tool-runtime/invoke", invoke_tool, body=InvokeTool, response=ToolInvocationResult),
    route("GET", "/connectors", list_connectors, response=ConnectorList, prefix=BETA),
    route("POST", "/connectors", register_connector, body=ConnectorInput, response=Connector, prefix=BETA),
    route(
        "GET", "/connectors/{connector_id}", get_connector, response=Connector, query=AuthorizationQuery, prefix=BETA
    ),
    route("DELETE", "/connectors/{connector_id}", delete_connector, response=ConnectorDeleted, prefix=BETA),
    route(
        "GET",
        "/connectors/{connector_id}/tools",
        list_connector_tools,
        response=ToolDefList,
        query=AuthorizationQuery,
        prefix=BETA,
    ),
    route(
        "GET",
        "/connectors/{connector_id}/tools/{tool_name}",
        get_connector_tool,
        response=ToolDef,
        query=AuthorizationQuery,
        prefix=BETA,
    ),
]
