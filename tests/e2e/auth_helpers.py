"""What the auth tests share: a run config with every API behind a fake upstream, and keys made in its storage."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fake_openai import EMBEDDING_MODEL, FakeOpenAI
from lamina.keys import create_key
from lamina.storage.sqlite import SQLiteStorageConfig, open_storage


def stack_config(fake: FakeOpenAI, data_dir: Path, **auth: Any) -> dict[str, Any]:
    """Inference (the fake upstream), files, vector stores and safety, with `auth` as the `auth:` section (API
    keys when it names no providers)."""
    auth.setdefault("providers", [{"id": "keys", "type": "api_keys", "config": {"cache_seconds": 0}}])
    return {
        "distro": "auth-test",
        "storage": {"dir": str(data_dir)},
        "providers": {
            "inference": [
                {"id": "fake", "type": "remote::openai", "config": {"base_url": fake.base_url, "max_retries": 0}}
            ],
            "files": [{"id": "files", "type": "inline::localfs", "config": {}}],
            "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib", "config": {}}],
            "safety": [{"id": "rules", "type": "inline::rules", "config": {}}],
        },
        "apis": {
            "inference": {
                "models": [
                    {
                        "id": "embed",
                        "provider_id": "fake",
                        "provider_model_id": EMBEDDING_MODEL,
                        "model_type": "embedding",
                    }
                ]
            },
            "vector_io": {"default_embedding_model": "embed"},
            "safety": {"shields": [{"id": "rules", "provider_id": "rules"}]},
        },
        "auth": auth,
    }


def make_key(data_dir: Path, name: str, **options: Any) -> str:
    """A new API key for `name` in the storage of the stack at `data_dir` (as `lamina keys create` makes it)."""

    async def main() -> str:
        storage = await open_storage(SQLiteStorageConfig(), data_dir)
        try:
            key, _ = await create_key(storage.kv, name, **options)
            return key
        finally:
            await storage.close()

    data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(main())
