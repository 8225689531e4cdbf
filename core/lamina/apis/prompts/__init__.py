"""The prompts API (Llama Stack's): versioned prompt templates with `{{variable}}` placeholders, kept in the stack's
storage. No provider: the router is the implementation. Other APIs use `PromptsRouter.render_prompt`."""

from __future__ import annotations

from typing import Any

from lamina.apis.prompts.router import PromptsRouter
from lamina.apis.prompts.routes import ROUTES
from lamina.specs import ApiSpec, NoConfig, RouterDeps


async def create_router(config: NoConfig, providers: dict[str, Any], deps: RouterDeps) -> PromptsRouter:
    return PromptsRouter(deps.storage.kv)


API = ApiSpec(
    name="prompts",
    description="Llama Stack prompts: versioned prompt templates with {{variable}} placeholders",
    router=create_router,
    routes=ROUTES,
)
