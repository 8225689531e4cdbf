"""What a safety provider implements.

A shield is a configured check served by a safety provider (`inline::llama-guard`, `inline::rules`, ...).
`run_shield` judges the LAST message, in the context of those before it, and answers a `Violation` (what to tell
the user, which categories, how sure per category, provider-specific `metadata` such as findings or `redacted`
text) or None.

A provider may declare `moderation_categories`: a dict mapping its own category names onto OpenAI's moderation
categories (`OPENAI_CATEGORIES`; several allowed per name). `/v1/moderations` reports a violation's categories
through it; names it does not map are reported as they are, as extra keys beside OpenAI's (which are always all
present). There, `model` names a shield (not an inference model); without it, or with one of OpenAI's moderation
models (`omni-moderation-latest`, `text-moderation-stable`, ...), the first shield of the run config answers.
"""

from __future__ import annotations

from typing import Any, Protocol

from lamina.apis.inference.types import ChatMessage
from lamina.apis.safety.types import Shield, Violation


class SafetyProvider(Protocol):
    async def run_shield(
        self, shield: Shield, messages: list[ChatMessage], params: dict[str, Any]
    ) -> Violation | None: ...
