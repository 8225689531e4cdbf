"""The Files API (OpenAI's): upload, list, retrieve, download and delete files."""

from __future__ import annotations

from typing import Any

from lamina.apis.files.router import FilesRouter
from lamina.apis.files.routes import ROUTES
from lamina.specs import ApiSpec, NoConfig, RouterDeps


async def create_router(config: NoConfig, providers: dict[str, Any], deps: RouterDeps) -> FilesRouter:
    return FilesRouter(providers)


API = ApiSpec(
    name="files",
    description="OpenAI Files: upload, list, retrieve, download and delete files",
    router=create_router,
    routes=ROUTES,
)
