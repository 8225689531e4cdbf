"""The file processors API (Llama Stack's `/v1alpha/file-processors/process`): a file in, text chunks out.

The processors are providers (`lamina.apis.file_processors.provider`), one per kind of file; core's own (plain
text, Markdown, HTML, JSON, CSV, PDF) are registered through core's `register_providers` like a plugin's, and
start without a run-config entry. Vector-store ingestion extracts text through this API's router too, so a plugin
adding a processor for a new extension adds it to both.
"""

from __future__ import annotations

from typing import Any

from lamina.apis.file_processors.router import FileProcessorsRouter
from lamina.apis.file_processors.routes import ROUTES
from lamina.apis.files.router import FilesRouter
from lamina.specs import ApiSpec, NoConfig, RouterDeps


async def create_router(config: NoConfig, providers: dict[str, Any], deps: RouterDeps) -> FileProcessorsRouter:
    return FileProcessorsRouter(providers, deps.api(FilesRouter))


API = ApiSpec(
    name="file_processors",
    description="Llama Stack file processors: a file's text, cut into chunks, by processors for each file type",
    router=create_router,
    needs=("files",),
    routes=ROUTES,
)
