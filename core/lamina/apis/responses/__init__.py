"""The Responses API (OpenAI's): one call that runs a model and its tools, stored and chained by id.

The router (`lamina.apis.responses.router`) keeps responses, their context and background jobs; a `responses`
provider, an orchestrator (`lamina.apis.responses.provider`), runs the model-and-tools loop. The default
orchestrator is the `lamina-responses` plugin (`inline::responses`).
"""

from __future__ import annotations

from typing import Any

from lamina.apis.responses.router import ResponsesRouter
from lamina.apis.responses.routes import ROUTES
from lamina.apis.responses.types import ResponsesConfig
from lamina.config import ConfigError
from lamina.specs import ApiSpec, RouterDeps


async def create_router(config: ResponsesConfig, providers: dict[str, Any], deps: RouterDeps) -> ResponsesRouter:
    if config.provider_id is not None and config.provider_id not in providers:
        raise ConfigError(
            f"{deps.source}: apis.responses.provider_id: no responses provider '{config.provider_id}'; "
            f"known: {', '.join(providers) or 'none'}"
        )
    router = ResponsesRouter(config, providers, deps)
    await router.start()
    return router


API = ApiSpec(
    name="responses",
    description="OpenAI responses: a model and its tools in one call, stored and chained",
    config=ResponsesConfig,
    router=create_router,
    needs=("inference", "conversations", "prompts"),
    routes=ROUTES,
)
