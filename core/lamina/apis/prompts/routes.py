"""The prompts API's HTTP routes (Llama Stack's paths)."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.prompts.router import PromptsRouter
from lamina.apis.prompts.types import CreatePrompt, GetPromptQuery, Prompt, PromptList, SetDefaultVersion, UpdatePrompt
from lamina.errors import validation_error
from lamina.http import json_response, parse_body, route, router_of


def _prompts(request: Request) -> PromptsRouter:
    return router_of(request, PromptsRouter)


async def create_prompt(request: Request) -> Response:
    """Create a prompt (version 1, the default)."""
    return json_response(await _prompts(request).create(await parse_body(request, CreatePrompt)))


async def list_prompts(request: Request) -> Response:
    """List prompts, each at its default version."""
    return json_response(await _prompts(request).list())


async def get_prompt(request: Request) -> Response:
    """Get a prompt at its default version, or at `?version=N`."""
    try:
        query = GetPromptQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise validation_error(exc) from None
    return json_response(await _prompts(request).get(request.path_params["prompt_id"], query.version))


async def update_prompt(request: Request) -> Response:
    """Add a version to a prompt (`version` must name the latest one)."""
    body = await parse_body(request, UpdatePrompt)
    return json_response(await _prompts(request).update(request.path_params["prompt_id"], body))


async def delete_prompt(request: Request) -> Response:
    """Delete a prompt and all its versions."""
    await _prompts(request).delete(request.path_params["prompt_id"])
    return json_response(None)


async def list_prompt_versions(request: Request) -> Response:
    """List every version of a prompt, oldest first."""
    return json_response(await _prompts(request).versions_of(request.path_params["prompt_id"]))


async def set_default_version(request: Request) -> Response:
    """Make one version of a prompt its default."""
    body = await parse_body(request, SetDefaultVersion)
    return json_response(await _prompts(request).set_default(request.path_params["prompt_id"], body.version))


ROUTES = [
    route("POST", "/prompts", create_prompt, body=CreatePrompt, response=Prompt),
    route("GET", "/prompts", list_prompts, response=PromptList),
    route("GET", "/prompts/{prompt_id}", get_prompt, response=Prompt, query=GetPromptQuery),
    route("PUT", "/prompts/{prompt_id}", update_prompt, body=UpdatePrompt, response=Prompt),
    route("DELETE", "/prompts/{prompt_id}", delete_prompt),
    route("GET", "/prompts/{prompt_id}/versions", list_prompt_versions, response=PromptList),
    route(
        "PUT", "/prompts/{prompt_id}/set-default-version", set_default_version, body=SetDefaultVersion, response=Prompt
    ),
]
