"""The prompts API's wire models (Llama Stack's versioned prompts): a prompt is a text with `{{variable}}`
placeholders, kept in numbered versions, one of which is the default."""

from __future__ import annotations

import re
import secrets

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lamina.access import Owner

PLACEHOLDER = re.compile(r"{{\s*(\w+)\s*}}")
PROMPT_ID = r"^pmpt_[0-9a-f]{48}$"


def new_prompt_id() -> str:
    return "pmpt_" + secrets.token_hex(24)


def undeclared(prompt: str | None, variables: list[str]) -> list[str]:
    return sorted(set(PLACEHOLDER.findall(prompt or "")) - set(variables))


class _Declared(BaseModel):
    """A prompt text and the variables it declares: every `{{name}}` in the text must be declared."""

    prompt: str
    variables: list[str] | None = None

    @model_validator(mode="after")
    def _declared(self) -> _Declared:
        missing = undeclared(self.prompt, self.variables or [])
        if missing:
            raise ValueError(f"the prompt uses undeclared variables {missing}; list them in `variables`")
        return self


class CreatePrompt(_Declared):
    model_config = ConfigDict(extra="forbid", strict=True)

    variables: list[str] | None = Field(None, description="the names its `{{placeholders}}` may use")


class UpdatePrompt(_Declared):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1, description="the latest version, which this update follows (a stale one is a 409)")
    set_as_default: bool = True


class SetDefaultVersion(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1)


class GetPromptQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, ge=1, description="a version number; default: the default version")


class Prompt(BaseModel):
    """One version of a prompt, as every route answers it."""

    prompt_id: str = Field(pattern=PROMPT_ID)
    prompt: str | None = None
    version: int = Field(ge=1)
    variables: list[str] = []
    is_default: bool = False


class PromptVersion(BaseModel):
    """What the storage keeps per version (`prompts/<id>/<version>`)."""

    prompt_id: str
    prompt: str
    version: int
    variables: list[str] = []
    owner: Owner | None = None  # who made the prompt (lamina.auth); None: made while auth was off


class PromptHead(BaseModel):
    """What the storage keeps per prompt (`prompt-heads/<id>`): its default and latest version."""

    prompt_id: str
    default_version: int
    latest_version: int
    owner: Owner | None = None


class PromptList(BaseModel):
    data: list[Prompt]
