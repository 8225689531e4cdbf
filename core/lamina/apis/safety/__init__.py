"""The safety API: a registry of shields, `/v1/safety/run-shield`, OpenAI's `/v1/moderations`, and core's
guardrails (`apis.safety.guardrails`), which apply shields to every text-generating call."""

from __future__ import annotations

import logging
from typing import Any

from lamina.apis.safety.router import SafetyRouter
from lamina.apis.safety.routes import ROUTES
from lamina.apis.safety.types import SafetyConfig, Shield
from lamina.config import ConfigError
from lamina.specs import ApiSpec, RouterDeps
from lamina.storage import Registry

log = logging.getLogger("lamina")


async def create_router(config: SafetyConfig, providers: dict[str, Any], deps: RouterDeps) -> SafetyRouter:
    configured = []
    for entry in config.shields:
        if entry.id is None:
            log.info("shields: a shield of provider %s has no id; it is disabled", entry.provider_id)
            continue
        if entry.provider_id not in providers:
            raise ConfigError(
                f"{deps.source}: apis.safety.shields: '{entry.id}' names unknown safety provider '{entry.provider_id}'"
            )
        configured.append(
            Shield(
                id=entry.id,
                provider_id=entry.provider_id,
                provider_shield_id=entry.provider_shield_id or entry.id,
                params=entry.params,
                source="config",
            )
        )
    known = {shield.id for shield in configured}
    for guardrail in config.guardrails:
        if guardrail.shield is not None and guardrail.shield not in known:
            raise ConfigError(
                f"{deps.source}: apis.safety.guardrails: unknown shield '{guardrail.shield}'; declare it under shields:"
            )
    registered = Registry(deps.storage.kv, "shields/", Shield, key=lambda shield: shield.id)
    return SafetyRouter(providers, registered, configured, config.guardrails)


API = ApiSpec(
    name="safety",
    description="Shields, run-shield, OpenAI moderations, and guardrails on generated text",
    config=SafetyConfig,
    router=create_router,
    routes=ROUTES,
)
