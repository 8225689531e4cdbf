"""inline::localfs — the bytes of the Files API on local disk, in files named by id (metadata is core's)."""

from __future__ import annotations

from typing import Any

import lamina
from pydantic import Field


class LocalFilesConfig(lamina.ProviderConfig):
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1, description="uploads larger than this get a 413")


async def create(config: LocalFilesConfig, deps: lamina.Deps) -> Any:
    from lamina_files_local.store import LocalFiles

    return await LocalFiles.open(deps.data_dir, config.max_upload_bytes, deps.storage.kv)


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="files",
            type="inline::localfs",
            config=LocalFilesConfig,
            create=create,
            description="Uploaded files' bytes on local disk",
        )
    ]
