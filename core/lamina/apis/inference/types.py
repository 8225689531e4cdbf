"""The inference API's wire models (OpenAI's chat completions, completions, embeddings and models) and config."""

from __future__ import annotations

import base64
import struct
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from lamina.access import Owner
from lamina.apis.inference.stored import check_metadata

Number = Annotated[float, Field(allow_inf_nan=False)]


class _Open(BaseModel):
    # Fields OpenAI adds before we do pass straight through to the provider.
    model_config = ConfigDict(extra="allow", strict=True)


class FunctionCall(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _text_parts(cls, content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        for part in content if isinstance(content, list) else ():
            if part.get("type") == "text" and not isinstance(part.get("text"), str):
                raise ValueError("a content part of type `text` needs `text`, a string")
        return content

    @property
    def text(self) -> str:
        """The message's text, with content parts of type text joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.get("text", "") for part in self.content or () if part.get("type") == "text")


class FunctionDefinition(_Open):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDefinition


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatCompletionRequest(_Open):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, ge=0, le=1)
    frequency_penalty: Number | None = Field(None, ge=-2, le=2)
    presence_penalty: Number | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    logit_bias: dict[str, Number] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None  # kept by Lamina (lamina.apis.inference.stored), never sent upstream

    _check_metadata = field_validator("metadata")(check_metadata)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Open):
    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, ge=0, le=1)
    frequency_penalty: Number | None = Field(None, ge=-2, le=2)
    presence_penalty: Number | None = Field(None, ge=-2, le=2)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    suffix: str | None = None
    user: str | None = None


class EmbeddingRequest(_Open):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class _Answer(BaseModel):
    """An answer as providers give it (relayed, not re-validated): documented in /v1/openapi.json; fields beyond
    these (providers add their own) pass through."""

    model_config = ConfigDict(extra="allow")


class ChatCompletion(_Answer):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class Completion(_Answer):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class Embedding(_Answer):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # a string when `encoding_format` is base64


class EmbeddingList(_Answer):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: dict[str, Any] | None = None


class ModelInfo(BaseModel):
    """A model a provider serves, as it reports it from `list_models`."""

    id: str
    model_type: Literal["llm", "embedding"] = "llm"
    metadata: dict[str, Any] = {}


class Model(BaseModel):
    """A model as `/v1/models` shows it: OpenAI's fields, then where requests for it go."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = ""
    provider_id: str
    provider_model_id: str
    model_type: Literal["llm", "embedding"] = "llm"
    metadata: dict[str, Any] = {}
    source: Literal["discovered", "registered", "config", "unlisted"] = "discovered"
    owner: Owner | None = None  # who registered it (lamina.auth); None for the run config's and providers' models

    # Llama Stack's names for the same facts, which its clients read (`llama-stack-client`'s Model).
    @computed_field  # type: ignore[prop-decorator]
    @property
    def identifier(self) -> str:
        return self.id

    @computed_field  # type: ignore[prop-decorator]
    @property
    def provider_resource_id(self) -> str:
        return self.provider_model_id

    @computed_field  # type: ignore[prop-decorator]
    @property
    def type(self) -> Literal["model"]:
        return "model"


class RegisterModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, pattern=r"^[^\s]+$")
    provider_id: str
    provider_model_id: str | None = None
    model_type: Literal["llm", "embedding"] = "llm"
    metadata: dict[str, Any] = {}


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ModelDeleted(BaseModel):
    id: str
    object: str
    deleted: bool


class ModelConfig(BaseModel):
    """A model alias of the run config (`apis.inference.models`)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    provider_id: str
    provider_model_id: str | None = None
    model_type: Literal["llm", "embedding"] = "llm"
    metadata: dict[str, Any] = {}


class InferenceConfig(BaseModel):
    """`apis.inference` in the run config."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelConfig] = []
    # Model discovery runs in the background; a request needing it waits this long at most, then goes on with
    # the models listed so far. None: until discovery ends (remote providers bound their own listing with
    # `discovery_timeout`; inline providers list once their models are loaded).
    discovery_wait_seconds: float | None = Field(None, ge=0)


def encode_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def decode_base64(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))
