"""The Conversations API (OpenAI's): conversations and their items, kept in the stack's storage.

The responses API reads a conversation's items as a response's context and appends the response's input and
output to it (`conversation=` on `POST /v1/responses`).
"""

from __future__ import annotations

from typing import Any

from lamina.apis.conversations.router import ConversationsRouter
from lamina.apis.conversations.routes import ROUTES
from lamina.apis.conversations.types import ConversationsConfig
from lamina.specs import ApiSpec, RouterDeps


async def create_router(
    config: ConversationsConfig, providers: dict[str, Any], deps: RouterDeps
) -> ConversationsRouter:
    return ConversationsRouter(deps.storage.kv)


API = ApiSpec(
    name="conversations",
    description="OpenAI conversations: items kept across responses",
    config=ConversationsConfig,
    router=create_router,
    routes=ROUTES,
)
