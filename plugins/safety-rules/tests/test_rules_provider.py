"""inline::rules as a provider: shield params, redaction, block-lists, custom patterns, large inputs."""

from __future__ import annotations

import asyncio

import pytest
from lamina.apis.inference.types import ChatMessage
from lamina.apis.safety.types import Shield
from lamina_safety_rules import RulesConfig
from lamina_safety_rules.provider import RulesProvider
from lamina_safety_rules.scanner import Scanner, iban_valid, luhn, redact

SHIELD = Shield(id="rules", provider_id="rules", provider_shield_id="rules")


def run(provider: RulesProvider, text: str, params: dict | None = None):
    return asyncio.run(provider.run_shield(SHIELD, [ChatMessage(role="user", content=text)], params or {}))


def test_checksums() -> None:
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("XX82 WEST 1234 5698 7654 32")  # unknown country
    scanner = Scanner()
    assert not scanner.scan("card 4111 1111 1111 1112")  # fails Luhn
    assert not scanner.scan("IBAN DE89 3704 0044 0532 0130 01")  # fails mod-97


def test_violation_has_categories_spans_and_scores() -> None:
    provider = RulesProvider(RulesConfig(), "rules")
    text = "Mail bob@example.org or call (415) 555-2671."
    violation = run(provider, text)
    assert violation is not None
    assert violation.categories == ["pii/email", "pii/phone"]
    assert violation.category_scores == {"pii/email": 1.0, "pii/phone": 1.0}
    spans = [(f["category"], text[f["start"] : f["end"]]) for f in violation.metadata["findings"]]
    assert spans == [("pii/email", "bob@example.org"), ("pii/phone", "(415) 555-2671")]
    assert "personal data" in violation.user_message and "redacted" not in violation.metadata
    assert run(provider, "The weather is nice today.") is None


def test_categories_param_narrows_and_redaction_masks() -> None:
    provider = RulesProvider(RulesConfig(redact=True), "rules")
    text = "key AKIAIOSFODNN7EXAMPLE, mail bob@example.org"
    only_secrets = run(provider, text, {"categories": ["secret"]})
    assert only_secrets.categories == ["secret/aws"]
    assert only_secrets.metadata["redacted"] == "key [SECRET/AWS], mail bob@example.org"
    assert run(provider, text, {"categories": ["prompt_injection"]}) is None
    everything = run(provider, text, {"redact": True})
    assert everything.metadata["redacted"] == "key [SECRET/AWS], mail [PII/EMAIL]"
    assert redact("abc", []) == "abc"


def test_blocklist_and_custom_patterns() -> None:
    provider = RulesProvider(
        RulesConfig(blocklist=["Project Falcon", "acme-internal"], patterns={"ticket": r"TKT-\d{6}"}), "r"
    )
    violation = run(provider, "Is project falcon related to TKT-123456? See ACME-INTERNAL docs.")
    assert violation.categories == ["blocklist", "custom/ticket"]
    assert len(violation.metadata["findings"]) == 3
    assert run(provider, "The falcon project and TKT-12 are unrelated.") is None


def test_bad_pattern_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="not a valid regex"):
        RulesConfig(patterns={"broken": "(unclosed"})


def test_large_input_is_scanned_in_linear_time() -> None:
    import time

    provider = RulesProvider(RulesConfig(), "rules")
    text = ("Ordinary words about servers and models. " * 24000) + "ping me at x.y@example.com"  # ~1 MB
    started = time.perf_counter()
    violation = run(provider, text)
    assert violation.categories == ["pii/email"]
    run(provider, "A" * 1_000_000)  # one long token: must not go quadratic
    run(provider, "1" * 200_000)
    assert time.perf_counter() - started < 5
