"""The safety router: the shields registry, run-shield, and OpenAI moderations over the shields."""

from __future__ import annotations

import asyncio
from typing import Any

from lamina import auth
from lamina.apis.inference.provider import new_id
from lamina.apis.inference.types import ChatMessage
from lamina.apis.safety.provider import SafetyProvider
from lamina.apis.safety.types import (
    OPENAI_CATEGORIES,
    GuardrailConfig,
    ModerationRequest,
    RegisterShield,
    Shield,
    Violation,
)
from lamina.errors import LaminaError, bad_request, conflict, not_found
from lamina.providers import malformed
from lamina.storage import Registry

MAX_INPUT_CHARS = 1_000_000  # per request, all inputs together
# OpenAI's moderation models (`omni-moderation-latest`, `text-moderation-stable`, ...): code written for OpenAI
# names one of them, so on /v1/moderations they stand for the default shield.
OPENAI_MODERATION_MODELS = ("omni-moderation-", "text-moderation-")


class SafetyRouter:
    def __init__(
        self,
        providers: dict[str, SafetyProvider],
        registered: Registry[Shield],
        configured: list[Shield],
        guardrails: list[GuardrailConfig],
    ) -> None:
        self.providers = providers
        self.registered = registered
        self.configured = {shield.id: shield for shield in configured}
        self.default_shield = configured[0].id if configured else None
        self.guardrails = guardrails  # the run config's, which core's shield guardrails apply
        self.guarded = {g.shield for g in guardrails if g.shield}  # shields guardrails use: they cannot be deleted

    async def list_shields(self) -> list[Shield]:
        registered = [s for s in await self.registered.list() if auth.can("read", "shield", s.id, s.owner)]
        return [*self.configured.values(), *registered]

    async def _lookup(self, shield_id: str) -> Shield | None:
        """The one place a shield is found by id: a registered shield the caller may not read does not exist
        for it; the run config's have no owner and serve every caller."""
        if (configured := self.configured.get(shield_id)) is not None:
            return configured
        shield = await self.registered.get(shield_id)
        return shield if shield is None or auth.can("read", "shield", shield_id, shield.owner) else None

    async def get_shield(self, shield_id: str, param: str = "shield_id") -> Shield:
        shield = await self._lookup(shield_id)
        if shield is None:
            known = ", ".join(s.id for s in await self.list_shields()) or "none"
            raise not_found(
                f"shield '{shield_id}' not found; known shields: {known}", param=param, code="shield_not_found"
            )
        return shield

    async def register_shield(self, request: RegisterShield) -> Shield:
        if request.provider_id not in self.providers:
            raise bad_request(
                f"no safety provider '{request.provider_id}'; known: {', '.join(self.providers) or 'none'}",
                param="provider_id",
            )
        owner = auth.owner()
        auth.require("create", "shield", request.id, owner)
        # Ids are one namespace: a shield another caller registered is in the way even if this one cannot see it.
        if request.id in self.configured or await self.registered.get(request.id) is not None:
            raise conflict(f"shield '{request.id}' already exists", param="id")
        shield = Shield(
            id=request.id,
            provider_id=request.provider_id,
            provider_shield_id=request.provider_shield_id or request.id,
            params=request.params,
            owner=owner,
        )
        return await self.registered.put(shield)

    async def unregister_shield(self, shield_id: str) -> None:
        shield = await self.get_shield(shield_id)
        if shield.source != "registered":
            raise bad_request(
                f"shield '{shield_id}' comes from the run config; it cannot be deleted", param="shield_id"
            )
        if shield_id in self.guarded:
            raise conflict(f"shield '{shield_id}' is used by a guardrail of the run config", param="shield_id")
        auth.require("delete", "shield", shield_id, shield.owner)
        await self.registered.delete(shield_id)

    async def run_shield(
        self, shield_id: str, messages: list[ChatMessage], params: dict[str, Any] | None = None
    ) -> Violation | None:
        shield = await self.get_shield(shield_id)
        size = sum(len(m.text) for m in messages)
        if size == 0:
            raise bad_request("the messages have no text to check", param="messages", code="empty_input")
        _check_size(size)
        provider = self.providers[shield.provider_id]
        verdict = await provider.run_shield(shield, messages, {**shield.params, **(params or {})})
        if verdict is not None and not isinstance(verdict, Violation):
            raise malformed(provider, "a verdict that is neither a Violation nor None", verdict)
        return verdict

    async def moderate(self, request: ModerationRequest) -> dict[str, Any]:
        shield = await self._moderation_shield(request.model)
        texts = _moderation_texts(request.input)
        _check_size(sum(len(t) for t in texts))
        mapping = getattr(self.providers[shield.provider_id], "moderation_categories", {}) or {}
        verdicts = await asyncio.gather(
            *(self.run_shield(shield.id, [ChatMessage(role="user", content=text)]) for text in texts)
        )
        return {
            "id": new_id("modr"),
            "model": request.model or shield.id,  # the model the client asked for, as OpenAI answers
            "results": [_moderation_result(v, mapping) for v in verdicts],
        }

    async def _moderation_shield(self, model: str | None) -> Shield:
        """The shield `model` names; without one, or for one of OpenAI's moderation models that no shield is
        called, the default shield: the run config's first, else the only shield there is."""
        if model is not None and (not model.startswith(OPENAI_MODERATION_MODELS) or await self._lookup(model)):
            return await self.get_shield(model, param="model")
        if self.default_shield is not None:
            return self.configured[self.default_shield]
        shields = await self.list_shields()
        if len(shields) == 1:
            return shields[0]
        known = ", ".join(s.id for s in shields) or "none"
        needs = f"'{model}' stands for the default shield, and" if model else "model is required:"
        raise bad_request(f"{needs} the run config declares no shield; name one of the shields: {known}", param="model")


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
    return {
        "flagged": violation is not None,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": {name: ["text"] for name in categories},  # only text is moderated here
    }
