"""Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`) over any inference provider,
translated to and from chat completions; and `translate`, the mapping between the two that remote::anthropic
(lamina-remote-anthropic) uses in the other direction."""

from __future__ import annotations

from typing import Any

import lamina
from lamina.apis.inference.router import InferenceRouter

from lamina_anthropic_messages.router import MessagesRouter
from lamina_anthropic_messages.routes import ROUTES
from lamina_anthropic_messages.types import MessagesConfig


async def create_router(config: MessagesConfig, providers: dict[str, Any], deps: lamina.RouterDeps) -> MessagesRouter:
    return MessagesRouter(deps.api(InferenceRouter))


API = lamina.ApiSpec(
    name="messages",
    description="Anthropic's Messages API over any inference provider",
    config=MessagesConfig,
    router=create_router,
    routes=ROUTES,
    needs=("inference",),
)


@lamina.hookimpl
def register_apis() -> list[lamina.ApiSpec]:
    return [API]
