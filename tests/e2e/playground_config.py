"""The run config the playground's browser tests and bench/playground.py serve: the starter's shape in front of the
fake upstream, with vector stores (the fake's embeddings), the responses orchestrator with MCP (lamina-tool-mcp),
the rules shield and an output guardrail."""

from __future__ import annotations

from typing import Any

from e2e_helpers import SECRET
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI

GUARDED_MODEL = "guarded"  # the fake's chat model behind an output guardrail that cuts e-mail addresses
STRICT_MODEL = "strict"  # the same model behind an input guardrail that refuses e-mail addresses with a 400


def playground_config(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {
        "distro": "playground-test",
        "providers": {
            "inference": [
                {
                    "id": "fake",
                    "type": "remote::openai",
                    "config": {"base_url": fake.base_url, "api_key": SECRET, "retry_backoff": 0.01},
                }
            ],
            "files": [{"id": "files", "type": "inline::localfs", "config": {}}],
            "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib", "config": {}}],
            "safety": [{"id": "rules", "type": "inline::rules", "config": {}}],
            "responses": [{"id": "responses", "type": "inline::responses", "config": {}}],
            "tool_runtime": [{"id": "mcp", "type": "remote::model-context-protocol", "config": {}}],
        },
        "apis": {
            "inference": {
                "models": [
                    {"id": name, "provider_id": "fake", "provider_model_id": CHAT_MODEL}
                    for name in (GUARDED_MODEL, STRICT_MODEL)
                ]
            },
            "vector_io": {"default_embedding_model": f"fake/{EMBEDDING_MODEL}"},
            "safety": {
                "shields": [{"id": "rules", "provider_id": "rules"}],
                "guardrails": [
                    {"shield": "rules", "apply_to": "output", "models": [GUARDED_MODEL], "output_check_chars": 8},
                    {"shield": "rules", "apply_to": "input", "models": [STRICT_MODEL]},
                ],
            },
        },
        **extra,
    }
