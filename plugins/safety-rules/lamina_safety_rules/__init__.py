"""inline::rules — fast local shields, no model: PII, secrets, prompt injection, block-lists and regexes."""

from __future__ import annotations

import re
from typing import Any

import lamina
from pydantic import Field, field_validator


class RulesConfig(lamina.ProviderConfig):
    categories: list[str] | None = Field(
        None,
        description="check only these categories or families (`pii`, `secret/aws`, `prompt_injection`); default all",
    )
    blocklist: list[str] = Field([], description="words or phrases to flag (category `blocklist`), case-insensitive")
    patterns: dict[str, str] = Field({}, description="name -> regex; a match is flagged as category `custom/<name>`")
    entropy_detection: bool = Field(True, description="flag long random-looking strings as secret/high_entropy")
    redact: bool = Field(False, description="add the judged text with findings masked to each violation")
    mask: str = Field("[{category}]", description="what replaces a finding when redacting; {category} is its name")

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: dict[str, str]) -> dict[str, str]:
        for name, regex in patterns.items():
            try:
                re.compile(regex)
            except re.error as exc:
                raise ValueError(f"pattern '{name}' is not a valid regex: {exc}") from None
        return patterns


async def create(config: RulesConfig, deps: lamina.Deps) -> Any:
    from lamina_safety_rules.provider import RulesProvider

    return RulesProvider(config, deps.provider_id)


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="safety",
            type="inline::rules",
            config=RulesConfig,
            create=create,
            description="Local rules: PII (checksummed), API keys and tokens, prompt injection, block-lists, regexes",
        )
    ]
