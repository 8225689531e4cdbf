"""The notes API: notes kept in the stack's storage, each tagged by a provider; and inline::hashtags, a provider
of it."""

from __future__ import annotations

from typing import Any

import lamina
from lamina.storage import Registry

from lamina_example_api import hashtags
from lamina_example_api.router import NotesRouter
from lamina_example_api.routes import ROUTES
from lamina_example_api.types import Note, NotesConfig


async def create_router(config: NotesConfig, providers: dict[str, Any], deps: lamina.RouterDeps) -> NotesRouter:
    notes = Registry(deps.storage.kv, "notes/", Note, key=lambda note: note.id)
    return NotesRouter(config, providers, notes)


API = lamina.ApiSpec(
    name="notes",
    description="Notes, tagged by a provider",
    config=NotesConfig,
    router=create_router,
    routes=ROUTES,
)


@lamina.hookimpl
def register_apis() -> list[lamina.ApiSpec]:
    return [API]


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="notes",
            type="inline::hashtags",
            config=hashtags.HashtagsConfig,
            create=hashtags.create,
            description="tags a note with its #words",
        )
    ]
