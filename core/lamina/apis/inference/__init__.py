"""The inference API: OpenAI chat completions, completions, embeddings and models.

`types` holds the wire models and the config, `provider` what a provider implements, `router` the dispatch
(model id -> provider), `routes` the HTTP handlers.
"""

from __future__ import annotations

from typing import Any

from lamina.apis.inference.router import InferenceRouter, alias
from lamina.apis.inference.routes import ROUTES
from lamina.apis.inference.stored import StoredCompletions
from lamina.apis.inference.types import InferenceConfig, Model
from lamina.config import ConfigError
from lamina.specs import ApiSpec, RouterDeps
from lamina.storage import Registry


async def create_router(config: InferenceConfig, providers: dict[str, Any], deps: RouterDeps) -> InferenceRouter:
    configured = [alias(m, "config") for m in config.models]
    for model in configured:
        if model.provider_id not in providers:
            raise ConfigError(
                f"{deps.source}: apis.inference.models: '{model.id}' names unknown provider '{model.provider_id}'"
            )
    registered = Registry(deps.storage.kv, "models/", Model, key=lambda model: model.id)
    router = InferenceRouter(
        providers,
        registered,
        configured,
        deps.guardrails,
        StoredCompletions(deps.storage.kv),
        discovery_wait=config.discovery_wait_seconds,
        shared=deps.shared,
    )
    router.start()
    return router


API = ApiSpec(
    name="inference",
    description="OpenAI chat completions, completions, embeddings and models",
    config=InferenceConfig,
    router=create_router,
    routes=ROUTES,
)
