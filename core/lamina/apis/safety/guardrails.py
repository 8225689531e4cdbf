"""Core's guardrails: the run config's `apis.safety.guardrails`, each a registered shield judged through the
safety API on the input and/or output of text generation."""

from __future__ import annotations

import fnmatch

from lamina.apis.inference.types import ChatMessage
from lamina.apis.safety.router import SafetyRouter
from lamina.apis.safety.types import GuardrailConfig
from lamina.guardrails import Guardrail, GuardrailViolation
from lamina.specs import GuardrailSpec, RouterDeps


class ShieldGuardrail(Guardrail):
    def __init__(self, config: GuardrailConfig, safety: SafetyRouter) -> None:
        self.config = config
        self.safety = safety
        self.name = f"shield:{config.shield}"
        self.on_input_violation = config.on_input_violation
        self.refusal_message = config.refusal_message
        self.output_check_chars = config.output_check_chars
        self.output_hold_back = config.output_hold_back
        self.checks_input = config.apply_to in ("input", "both")

    @property
    def checks_output(self) -> bool:
        return self.config.apply_to in ("output", "both")

    def applies_to(self, model: str) -> bool:
        patterns = self.config.models
        return patterns is None or any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns)

    async def _run(self, messages: list[ChatMessage]) -> GuardrailViolation | None:
        assert self.config.shield is not None  # disabled guardrails are never created
        violation = await self.safety.run_shield(self.config.shield, messages, {})
        if violation is None:
            return None
        return GuardrailViolation(
            guardrail=self.name,
            message=violation.user_message,
            categories=violation.categories,
            redacted=violation.metadata.get("redacted"),
        )

    async def check_input(self, messages: list[ChatMessage]) -> GuardrailViolation | None:
        return await self._run(messages) if self.checks_input else None

    async def check_output(self, messages: list[ChatMessage], text: str) -> GuardrailViolation | None:
        return await self._run([*messages, ChatMessage(role="assistant", content=text)])


async def _shield_guardrails(deps: RouterDeps) -> list[Guardrail]:
    try:
        safety = deps.api(SafetyRouter)
    except LookupError:  # a stack without the safety API has no shields to guard with
        return []
    return [ShieldGuardrail(config, safety) for config in safety.guardrails if config.shield]


SHIELD_GUARDRAILS = GuardrailSpec(
    name="shields",
    create=_shield_guardrails,
    description="the run config's `apis.safety.guardrails`: registered shields on generated text, in and out",
)
