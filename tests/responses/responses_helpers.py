"""What the Responses tests share: the model name and the run config of a server in front of the scripted upstream."""

from __future__ import annotations

from typing import Any

from scripted_upstream import CHAT_MODEL, EMBEDDING_MODEL, ScriptedUpstream

MODEL = f"up/{CHAT_MODEL}"


def responses_config(upstream: ScriptedUpstream, **apis: Any) -> dict[str, Any]:
    return {
        "providers": {
            "inference": [
                {"id": "up", "type": "remote::openai", "config": {"base_url": upstream.base_url, "max_retries": 0}}
            ],
            "files": [{"id": "files", "type": "inline::localfs", "config": {}}],
            "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib", "config": {}}],
            "responses": [{"id": "responses", "type": "inline::responses", "config": {}}],
        },
        "apis": {"vector_io": {"default_embedding_model": f"up/{EMBEDDING_MODEL}"}, **apis},
    }
