"""The safety API's wire models and config: shields, run-shield, OpenAI moderations, guardrails."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from lamina.access import Owner
from lamina.apis.inference.types import ChatMessage

OPENAI_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


class Shield(BaseModel):
    id: str
    object: Literal["shield"] = "shield"
    created: int = Field(default_factory=lambda: int(time.time()))
    provider_id: str
    provider_shield_id: str
    params: dict[str, Any] = {}
    source: Literal["config", "registered"] = "registered"
    owner: Owner | None = None  # who registered it (lamina.auth); None for the run config's shields

    # Llama Stack's names for the same facts, which its clients read (`llama-stack-client`'s Shield).
    @computed_field  # type: ignore[prop-decorator]
    @property
    def identifier(self) -> str:
        return self.id

    @computed_field  # type: ignore[prop-decorator]
    @property
    def provider_resource_id(self) -> str:
        return self.provider_shield_id

    @computed_field  # type: ignore[prop-decorator]
    @property
    def type(self) -> Literal["shield"]:
        return "shield"


class RegisterShield(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, pattern=r"^[^\s]+$")
    provider_id: str
    provider_shield_id: str | None = None
    params: dict[str, Any] = {}


class ShieldList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Shield]


class DeletedShield(BaseModel):
    id: str
    object: Literal["shield"] = "shield"
    deleted: bool = True


class Violation(BaseModel):
    """A shield's verdict against a message: what to tell the user, which categories, how sure per category."""

    violation_level: Literal["error", "warn"] = "error"
    user_message: str
    categories: list[str] = []
    category_scores: dict[str, float] = {}
    metadata: dict[str, Any] = {}  # provider-specific: findings with spans, redacted text, raw verdict...


class RunShieldRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shield_id: str
    messages: list[ChatMessage] = Field(min_length=1)
    params: dict[str, Any] = {}


class RunShieldResponse(BaseModel):
    violation: Violation | None = None


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    input: str | list[str] | list[dict[str, Any]]
    model: str | None = None


class ShieldConfig(BaseModel):
    """A shield of the run config (`apis.safety.shields`)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, pattern=r"^[^\s]+$")  # no id (`${env.X:+id}` with X unset) disables the shield
    provider_id: str
    provider_shield_id: str | None = None
    params: dict[str, Any] = {}


class GuardrailConfig(BaseModel):
    """A shield applied to every chat completion and completion of the matching models, on their input, output
    or both (`apis.safety.guardrails`)."""

    model_config = ConfigDict(extra="forbid")

    shield: str | None = None  # no shield (`${env.X:+shield}` with X unset) disables the guardrail
    apply_to: Literal["input", "output", "both"] = "both"
    models: list[str] | None = None  # model ids or shell patterns (`openai/gpt-*`); None: every model
    on_input_violation: Literal["error", "refuse", "redact"] = "error"
    refusal_message: str = "Sorry, I can't help with that."
    output_check_chars: int = Field(200, ge=1)  # check streamed output at least this often (and at sentence ends)
    output_hold_back: bool = True  # hold streamed text until checked; false streams first and cuts later


class SafetyConfig(BaseModel):
    """`apis.safety` in the run config."""

    model_config = ConfigDict(extra="forbid")

    shields: list[ShieldConfig] = []
    guardrails: list[GuardrailConfig] = []
