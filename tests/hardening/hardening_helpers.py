"""What the hardening tests share (not in conftest.py: tests/e2e has a module of that name too)."""

from __future__ import annotations

from typing import Any

from fake_openai import EMBEDDING_MODEL, FakeOpenAI

SECRET = "sk-hardening-secret-4711"


def starter_like(fake: FakeOpenAI, *, server: dict[str, Any] | None = None, **remote: Any) -> dict[str, Any]:
    """Like the starter distro with OPENAI_BASE_URL and EMBEDDING_MODEL set: remote inference on the fake
    upstream, local files, hnswlib vector stores, the rules shield."""
    return {
        "distro": "hardening",
        "server": server or {},
        "providers": {
            "inference": [
                {
                    "id": "openai",
                    "type": "remote::openai",
                    "config": {"base_url": fake.base_url, "api_key": SECRET, "retry_backoff": 0.01, **remote},
                }
            ],
            "files": [{"id": "files", "type": "inline::localfs", "config": {}}],
            "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib", "config": {}}],
            "safety": [{"id": "rules", "type": "inline::rules", "config": {}}],
        },
        "apis": {
            "safety": {"shields": [{"id": "rules", "provider_id": "rules"}]},
            "vector_io": {"default_embedding_model": f"openai/{EMBEDDING_MODEL}"},
        },
    }
