"""The safety API: a registry of shields, `/v1/safety/run-shield`, OpenAI's `/v1/moderations`, and guardrails.

A shield is a configured check served by a safety provider (`inline::llama-guard`, `inline::rules`, ...).
Providers implement `SafetyProvider.run_shield`: judge the LAST message, in the context of those before it,
and answer a `Violation` or None. A provider may declare `moderation_categories`, mapping its own category
names onto OpenAI's moderation categories (several allowed); names it does not map are reported as they are.

When it starts (after inference), the safety router installs on the inference router every guardrail the
`register_guardrails` hook offers; core's own applies the run config's `guardrails:` (see `guardrails.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.guardrails import GuardrailChain
from lamina.apis.inference import ChatMessage, new_id
from lamina.config import ConfigError
from lamina.errors import LaminaError, bad_request, conflict, not_found
from lamina.http import json_response, parse_body, route, stack_of
from lamina.kvstore import KVStore
from lamina.plugins import guardrail_specs
from lamina.specs import ApiSpec

if TYPE_CHECKING:
    from lamina.resolver import Stack

log = logging.getLogger("lamina")
SHIELDS = "shields/"  # key prefix of registered shields in the key-value store
MAX_INPUT_CHARS = 1_000_000  # per request, all inputs together

OPENAI_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


class Shield(BaseModel):
    id: str
    object: Literal["shield"] = "shield"
    created: int = Field(default_factory=lambda: int(time.time()))
    provider_id: str
    provider_shield_id: str
    params: dict[str, Any] = {}
    source: Literal["config", "registered"] = "registered"


class RegisterShield(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, pattern=r"^[^\s]+$")
    provider_id: str
    provider_shield_id: str | None = None
    params: dict[str, Any] = {}


class ShieldList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Shield]


class DeletedShield(BaseModel):
    id: str
    object: Literal["shield"] = "shield"
    deleted: bool = True


class Violation(BaseModel):
    """A shield's verdict against a message: what to tell the user, which categories, how sure per category."""

    violation_level: Literal["error", "warn"] = "error"
    user_message: str
    categories: list[str] = []
    category_scores: dict[str, float] = {}
    metadata: dict[str, Any] = {}  # provider-specific: findings with spans, redacted text, raw verdict...


class RunShieldRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shield_id: str
    messages: list[ChatMessage] = Field(min_length=1)
    params: dict[str, Any] = {}


class RunShieldResponse(BaseModel):
    violation: Violation | None = None


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    input: str | list[str] | list[dict[str, Any]]
    model: str | None = None


class SafetyProvider(Protocol):
    async def run_shield(
        self, shield: Shield, messages: list[ChatMessage], params: dict[str, Any]
    ) -> Violation | None: ...


class SafetyRouter:
    def __init__(self, providers: dict[str, SafetyProvider], kvstore: KVStore) -> None:
        self.providers = providers
        self.kvstore = kvstore
        self.shields: dict[str, Shield] = {}
        self.default_shield: str | None = None
        self.guarded: set[str] = set()  # shields guardrails use, which cannot be deleted

    async def start(self, configured: list[Shield]) -> None:
        for record in [Shield.model_validate(item) for item in await self.kvstore.values(SHIELDS)] + configured:
            self.shields[record.id] = record
        self.default_shield = configured[0].id if configured else None

    async def list_shields(self) -> list[Shield]:
        return list(self.shields.values())

    async def get_shield(self, shield_id: str) -> Shield:
        shield = self.shields.get(shield_id)
        if shield is None:
            known = ", ".join(self.shields) or "none"
            raise not_found(
                f"shield '{shield_id}' not found; known shields: {known}", param="shield_id", code="shield_not_found"
            )
        return shield

    async def register_shield(self, request: RegisterShield) -> Shield:
        if request.provider_id not in self.providers:
            raise bad_request(
                f"no safety provider '{request.provider_id}'; known: {', '.join(self.providers) or 'none'}",
                param="provider_id",
            )
        if request.id in self.shields:
            raise conflict(f"shield '{request.id}' already exists", param="id")
        shield = Shield(
            id=request.id,
            provider_id=request.provider_id,
            provider_shield_id=request.provider_shield_id or request.id,
            params=request.params,
        )
        await self.kvstore.set(SHIELDS + shield.id, shield.model_dump())
        self.shields[shield.id] = shield
        return shield

    async def unregister_shield(self, shield_id: str) -> None:
        shield = await self.get_shield(shield_id)
        if shield.source != "registered":
            raise bad_request(
                f"shield '{shield_id}' comes from the run config; it cannot be deleted", param="shield_id"
            )
        if shield_id in self.guarded:
            raise conflict(f"shield '{shield_id}' is used by a guardrail of the run config", param="shield_id")
        await self.kvstore.delete(SHIELDS + shield_id)
        del self.shields[shield_id]

    async def run_shield(
        self, shield_id: str, messages: list[ChatMessage], params: dict[str, Any] | None = None
    ) -> Violation | None:
        shield = await self.get_shield(shield_id)
        size = sum(len(m.text) for m in messages)
        if size == 0:
            raise bad_request("the messages have no text to check", param="messages", code="empty_input")
        _check_size(size)
        provider = self.providers[shield.provider_id]
        return await provider.run_shield(shield, messages, {**shield.params, **(params or {})})

    async def moderate(self, request: ModerationRequest) -> dict[str, Any]:
        shield_id = (
            request.model or self.default_shield or (next(iter(self.shields)) if len(self.shields) == 1 else None)
        )
        if shield_id is None:
            raise bad_request("model is required: name a shield (GET /v1/shields lists them)", param="model")
        shield = await self.get_shield(shield_id)
        texts = _moderation_texts(request.input)
        _check_size(sum(len(t) for t in texts))
        mapping = getattr(self.providers[shield.provider_id], "moderation_categories", {}) or {}
        verdicts = await asyncio.gather(
            *(self.run_shield(shield_id, [ChatMessage(role="user", content=text)]) for text in texts)
        )
        return {"id": new_id("modr"), "model": shield_id, "results": [_moderation_result(v, mapping) for v in verdicts]}


def _check_size(size: int) -> None:
    if size > MAX_INPUT_CHARS:
        raise LaminaError(
            f"input too large: {size} characters; the limit is {MAX_INPUT_CHARS} per request",
            status=413,
            param="input",
            code="input_too_large",
        )


def _moderation_texts(value: str | list[str] | list[dict[str, Any]]) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not items:
        raise bad_request("input must not be empty", param="input", code="empty_input")
    texts = []
    for item in items:
        if isinstance(item, dict):
            if item.get("type") != "text" or not isinstance(item.get("text"), str):
                raise bad_request("only text inputs ({'type': 'text', 'text': ...}) can be moderated", param="input")
            item = item["text"]
        if not item.strip():
            raise bad_request("input must not contain empty strings", param="input", code="empty_input")
        texts.append(item)
    return texts


def _moderation_result(violation: Violation | None, mapping: dict[str, list[str]]) -> dict[str, Any]:
    categories = dict.fromkeys(OPENAI_CATEGORIES, False)
    scores = dict.fromkeys(OPENAI_CATEGORIES, 0.0)
    if violation is not None:
        for category in violation.categories:
            score = violation.category_scores.get(category, 1.0)
            for name in mapping.get(category) or [category]:
                categories[name] = True
                scores[name] = max(scores.get(name, 0.0), score)
    return {"flagged": violation is not None, "categories": categories, "category_scores": scores}


async def _router(providers: dict[str, Any], stack: Stack) -> SafetyRouter:
    router = SafetyRouter(providers, stack.kvstore)
    source = stack.config.source
    configured = []
    for entry in stack.config.shields:
        if entry.id is None:
            log.info("shields: a shield of provider %s has no id; it is disabled", entry.provider_id)
            continue
        if entry.provider_id not in providers:
            raise ConfigError(f"{source}: shields: '{entry.id}' names unknown safety provider '{entry.provider_id}'")
        configured.append(
            Shield(
                id=entry.id,
                provider_id=entry.provider_id,
                provider_shield_id=entry.provider_shield_id or entry.id,
                params=entry.params,
                source="config",
            )
        )
    await router.start(configured)
    for guardrail in stack.config.guardrails:
        if guardrail.shield is None:
            continue
        if guardrail.shield not in router.shields:
            raise ConfigError(f"{source}: guardrails: unknown shield '{guardrail.shield}'; declare it under shields:")
        router.guarded.add(guardrail.shield)
    stack.apis["safety"] = router  # guardrail factories below look it up like any other API
    guardrails = []
    for spec in guardrail_specs(stack.pm).values():
        guardrails += await spec.create(stack) or []
    inference = stack.apis.get("inference")
    if guardrails and inference is not None:
        inference.chat_guard = GuardrailChain(guardrails)
        log.info("guardrails on chat completions: %s", ", ".join(g.name for g in guardrails))
    return router


def _safety(request: Request) -> SafetyRouter:
    return stack_of(request).apis["safety"]


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
    """Classify text as potentially harmful (OpenAI's moderations); `model` names a shield."""
    body = await parse_body(request, ModerationRequest)
    return json_response(await _safety(request).moderate(body))


API = ApiSpec(
    name="safety",
    description="Shields, run-shield, OpenAI moderations, and guardrails on chat completions",
    router=_router,
    needs=("inference",),
    routes=[
        route("GET", "/shields", list_shields, response=ShieldList),
        route("POST", "/shields", register_shield, body=RegisterShield, response=Shield),
        route("GET", "/shields/{shield_id:path}", get_shield, response=Shield),
        route("DELETE", "/shields/{shield_id:path}", delete_shield, response=DeletedShield),
        route("POST", "/safety/run-shield", run_shield, body=RunShieldRequest, response=RunShieldResponse),
        route("POST", "/moderations", create_moderation, body=ModerationRequest),
    ],
)
