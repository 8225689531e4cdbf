"""The inline::rules provider: runs the scanner on the judged message and reports findings with their spans.

Shield params (set at registration or per request) override the provider's config: `categories` (list),
`redact` (bool).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from lamina.apis.inference.types import ChatMessage
from lamina.apis.safety.types import Shield, Violation
from lamina.errors import bad_request

from lamina_safety_rules import RulesConfig
from lamina_safety_rules.scanner import Finding, Scanner, redact

INLINE_LIMIT = 64_000  # characters; longer texts are scanned in a worker thread so the server stays responsive
FAMILIES = {"pii": "personal data", "secret": "secrets", "prompt_injection": "a prompt injection attempt"}


class RulesProvider:
    moderation_categories: ClassVar[dict[str, list[str]]] = {}  # nothing here corresponds to OpenAI's categories

    def __init__(self, config: RulesConfig, provider_id: str) -> None:
        self.config = config
        self.provider_id = provider_id
        self.scanner = Scanner(
            blocklist=config.blocklist, patterns=config.patterns, entropy_detection=config.entropy_detection
        )

    def check(self, text: str, params: dict[str, Any] | None = None) -> tuple[list[Finding], bool]:
        params = params or {}
        categories = params.get("categories", self.config.categories)
        if categories is not None and (
            not isinstance(categories, list) or not all(isinstance(c, str) for c in categories)
        ):
            raise bad_request("params.categories must be a list of category names", param="params.categories")
        return self.scanner.scan(text, categories), bool(params.get("redact", self.config.redact))

    async def run_shield(self, shield: Shield, messages: list[ChatMessage], params: dict[str, Any]) -> Violation | None:
        text = messages[-1].text
        if len(text) > INLINE_LIMIT:
            findings, redacting = await asyncio.to_thread(self.check, text, params)
        else:
            findings, redacting = self.check(text, params)
        if not findings:
            return None
        categories = list(dict.fromkeys(f.category for f in findings))
        metadata: dict[str, Any] = {
            "findings": [{"category": f.category, "start": f.start, "end": f.end} for f in findings]
        }
        if redacting:
            metadata["redacted"] = redact(text, findings, self.config.mask)
        return Violation(
            user_message=_describe(categories),
            categories=categories,
            category_scores=dict.fromkeys(categories, 1.0),
            metadata=metadata,
        )


def _describe(categories: list[str]) -> str:
    kinds: dict[str, list[str]] = {}
    for category in categories:
        family, _, kind = category.partition("/")
        kinds.setdefault(FAMILIES.get(family, family), []).append(kind)
    parts = [f"{name} ({', '.join(k for k in found if k)})" if any(found) else name for name, found in kinds.items()]
    return "The message contains " + "; ".join(parts) + "."
