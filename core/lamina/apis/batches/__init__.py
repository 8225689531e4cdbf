"""The Batches API (OpenAI's): a JSONL file of requests run in the background, durably, with results as files.

See `lamina.apis.batches.router` for how a batch runs, survives restarts and crashes, and shares the server.
"""

from __future__ import annotations

from typing import Any

from lamina.apis.batches.router import BatchesRouter
from lamina.apis.batches.routes import ROUTES
from lamina.apis.batches.types import BatchesConfig
from lamina.specs import ApiSpec, RouterDeps


async def create_router(config: BatchesConfig, providers: dict[str, Any], deps: RouterDeps) -> BatchesRouter:
    router = BatchesRouter(config, deps)
    await router.start()
    return router


API = ApiSpec(
    name="batches",
    description="OpenAI Batches: JSONL files of requests run in the background, results as files",
    config=BatchesConfig,
    router=create_router,
    routes=ROUTES,
    needs=("files",),
)
