"""Anthropic's Messages API request models (validated into 400s in Anthropic's error shape) and the API's config."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import lamina
from pydantic import BaseModel, ConfigDict, Field


class MessagesConfig(lamina.ProviderConfig):
    """`apis.messages` in the run config: no settings yet."""


class _Block(BaseModel):
    # Blocks carry fields we do not use (cache_control, citations): accepted and left out of the translation.
    model_config = ConfigDict(extra="allow", strict=True)


class Base64Source(_Block):
    type: Literal["base64"]
    media_type: str
    data: str = Field(min_length=1)


class UrlSource(_Block):
    type: Literal["url"]
    url: str


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class ImageBlock(_Block):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] | None = None
    is_error: bool | None = None


class ThinkingBlock(_Block):
    """An earlier turn's thinking, sent back by clients: chat completions have no place for it, so it is dropped."""

    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock, Field(discriminator="type")
]


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolDefinition(_Block):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: str | None = None


class OutputFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    effort: str | None = None  # how hard Claude thinks: no counterpart in chat completions, ignored
    format: OutputFormat | None = None


class CountTokensRequest(BaseModel):
    # Unknown fields are a 400, as Anthropic answers them: a misspelt setting is not silently ignored.
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None
    output_config: OutputConfig | None = None
    # Settings of Anthropic's own service (caching, regions, tiers, workspaces): accepted, nothing to apply here.
    cache_control: Any = None
    container: Any = None
    diagnostics: Any = None
    inference_geo: Any = None
    service_tier: Any = None
    speed: Any = None
    user_profile_id: Any = None
    workspace_id: Any = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    top_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0)
    metadata: Metadata | None = None
