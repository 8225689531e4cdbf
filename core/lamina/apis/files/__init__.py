"""The Files API (OpenAI's): upload, list, retrieve, download and delete files.

The router keeps every file's metadata in the stack's storage (see `lamina.apis.files.router`); providers keep
only the bytes (see `lamina.apis.files.provider`).
"""

from __future__ import annotations

from typing import Any

from lamina.apis.files.router import FilesRouter
from lamina.apis.files.routes import ROUTES
from lamina.apis.files.types import FilesConfig
from lamina.specs import ApiSpec, RouterDeps


async def create_router(config: FilesConfig, providers: dict[str, Any], deps: RouterDeps) -> FilesRouter:
    router = FilesRouter(config, providers, deps.storage.kv)
    await router.start()
    return router


API = ApiSpec(
    name="files",
    description="OpenAI Files: upload, list, retrieve, download and delete files",
    config=FilesConfig,
    router=create_router,
    routes=ROUTES,
)
