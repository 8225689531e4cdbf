"""The safety API's HTTP routes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.safety.router import SafetyRouter
from lamina.apis.safety.types import (
    DeletedShield,
    ModerationRequest,
    RegisterShield,
    RunShieldRequest,
    RunShieldResponse,
    Shield,
    ShieldList,
)
from lamina.http import json_response, parse_body, route, router_of


def _safety(request: Request) -> SafetyRouter:
    return router_of(request, SafetyRouter)


async def list_shields(request: Request) -> Response:
    """List the shields."""
    return json_response(ShieldList(data=await _safety(request).list_shields()))


async def register_shield(request: Request) -> Response:
    """Register a shield served by a safety provider."""
    body = await parse_body(request, RegisterShield)
    return json_response(await _safety(request).register_shield(body))


async def get_shield(request: Request) -> Response:
    """Retrieve a shield."""
    return json_response(await _safety(request).get_shield(request.path_params["shield_id"]))


async def delete_shield(request: Request) -> Response:
    """Delete a registered shield."""
    shield_id = request.path_params["shield_id"]
    await _safety(request).unregister_shield(shield_id)
    return json_response(DeletedShield(id=shield_id))


async def run_shield(request: Request) -> Response:
    """Check messages with a shield: the last message is judged, those before are its context."""
    body = await parse_body(request, RunShieldRequest)
    violation = await _safety(request).run_shield(body.shield_id, body.messages, body.params)
    return json_response(RunShieldResponse(violation=violation))


async def create_moderation(request: Request) -> Response:
    """Classify text as potentially harmful (OpenAI's moderations); `model` names a shield, and OpenAI's
    moderation models (`omni-moderation-latest`, ...) stand for the default shield."""
    body = await parse_body(request, ModerationRequest)
    return json_response(await _safety(request).moderate(body))


ROUTES = [
    route("GET", "/shields", list_shields, response=ShieldList),
    route("POST", "/shields", register_shield, body=RegisterShield, response=Shield),
    route("GET", "/shields/{shield_id:path}", get_shield, response=Shield),
    route("DELETE", "/shields/{shield_id:path}", delete_shield, response=DeletedShield),
    route("POST", "/safety/run-shield", run_shield, body=RunShieldRequest, response=RunShieldResponse),
    route("POST", "/moderations", create_moderation, body=ModerationRequest),
]
