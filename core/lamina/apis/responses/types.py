"""The responses API's wire models (OpenAI's Responses API), the stored record of a response, and its config."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from lamina.access import Owner
from lamina.apis.conversations.types import InputItem, Item
from lamina.apis.vector_io.types import Comparison, Compound, RankingOptions

Number = Annotated[float, Field(allow_inf_nan=False)]
JSON_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


def check_schema(schema: dict[str, Any], where: str = "") -> None:
    """A light structural check of a JSON schema, so a malformed one is a 400 naming where it is wrong rather than
    an upstream's 400 (or a model ignoring it). Raises ValueError."""
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for one in kinds:
        if one not in JSON_TYPES:
            raise ValueError(f"{where or 'schema'}: unknown JSON schema type {one!r}")
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise ValueError(f"{where or 'schema'}: `properties` must be an object")
        for name, sub in properties.items():
            if not isinstance(sub, dict):
                raise ValueError(f"{where}.properties.{name}: must be a schema object")
            check_schema(sub, f"{where}.properties.{name}" if where else f"properties.{name}")
    required = schema.get("required")
    if required is not None and not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        raise ValueError(f"{where or 'schema'}: `required` must be a list of property names")
    items = schema.get("items")
    if items is not None and not isinstance(items, (dict, bool)):
        raise ValueError(f"{where or 'schema'}: `items` must be a schema object")
    if isinstance(items, dict):
        check_schema(items, f"{where}.items" if where else "items")


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value)
        return value


class FileSearchTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["file_search"]
    vector_store_ids: list[str] = Field(min_length=1)
    filters: Comparison | Compound | None = None
    max_num_results: int | None = Field(None, ge=1, le=50)
    ranking_options: RankingOptions | None = None


class HostedTool(BaseModel):
    """A tool run by a tool runtime (web search, MCP, ...): kept as sent; the orchestrator decides if it can."""

    model_config = ConfigDict(extra="allow")

    type: str


def _tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("function", "file_search") else "hosted"


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")]
    | Annotated[FileSearchTool, Tag("file_search")]
    | Annotated[HostedTool, Tag("hosted")],
    Discriminator(_tool_kind),
]


class NamedTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function", "file_search", "web_search", "web_search_preview", "mcp"]
    name: str | None = None
    server_label: str | None = None

    @model_validator(mode="after")
    def _function_named(self) -> NamedTool:
        if self.type == "function" and not self.name:
            raise ValueError("a function tool_choice needs the function's `name`")
        return self


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _json_schema(self) -> TextFormat:
        if self.type == "json_schema":
            if not self.name:
                raise ValueError("a json_schema format needs a `name`")
            if self.schema_ is None:
                raise ValueError("a json_schema format needs a `schema`")
            check_schema(self.schema_)
        return self

    def wire(self) -> dict[str, Any]:
        if self is TEXT:
            return {"type": "text"}  # what nearly every response echoes: made without pydantic's dump
        return self.model_dump(by_alias=True, exclude_none=True)

    def response_format(self) -> dict[str, Any] | None:
        """As a chat completion's `response_format`."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        spec: dict[str, Any] = {"name": self.name, "schema": self.schema_}
        if self.description is not None:
            spec["description"] = self.description
        if self.strict is not None:
            spec["strict"] = self.strict
        return {"type": "json_schema", "json_schema": spec}


TEXT = TextFormat(type="text")  # the default format, shared: never changed


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ConversationRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str


INCLUDABLE = frozenset(
    {
        "file_search_call.results",
        "message.output_text.logprobs",
        "reasoning.encrypted_content",
        "web_search_call.action.sources",
        "web_search_call.results",
        "code_interpreter_call.outputs",
        "computer_call_output.output.image_url",
        "message.input_image.image_url",
    }
)


class PromptRef(BaseModel):
    """`prompt`: a stored prompt (the prompts API, `/v1/prompts`) rendered into the response's instructions."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    version: str | None = None  # default: the prompt's default version
    variables: dict[str, str] | None = None


class CreateResponse(BaseModel):
    """`POST /v1/responses`. Unknown fields are ignored (OpenAI adds them faster than anyone can follow)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model: str = Field(min_length=1)
    input: str | list[InputItem] = ""
    instructions: str | None = None
    prompt: PromptRef | None = None
    previous_response_id: str | None = None
    conversation: str | ConversationRef | None = None
    store: bool = True
    background: bool = False
    stream: bool = False
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    max_output_tokens: int | None = Field(None, ge=1)
    max_tool_calls: int | None = Field(None, ge=1)
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, ge=0, le=1)
    tools: list[Tool] = []
    tool_choice: Literal["auto", "none", "required"] | NamedTool = "auto"
    parallel_tool_calls: bool = True
    text: TextOptions | None = None
    include: list[str] = []
    truncation: Literal["auto", "disabled"] = "disabled"
    user: str | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("include")
    @classmethod
    def _include(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in INCLUDABLE:
                raise ValueError(f"unknown include value {name!r}; known: {', '.join(sorted(INCLUDABLE))}")
        return value

    @property
    def conversation_id(self) -> str | None:
        return self.conversation.id if isinstance(self.conversation, ConversationRef) else self.conversation

    @property
    def format(self) -> TextFormat:
        return (self.text.format if self.text else None) or TEXT


class ListQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    model: str | None = None


class StoredResponse(BaseModel):
    """A response as stored: the response object, the input items it was given, and what a background job needs.
    `owner` is who created it (auth; None: made while auth was off)."""

    id: str
    response: dict[str, Any]
    input_items: list[Item]
    request: dict[str, Any] | None = None  # kept for background responses, which a job runs (again after a crash)
    order: int = Field(default_factory=time.time_ns)
    owner: Owner | None = None
    # The process generating a streamed response while it is in_progress (`host:pid:nonce`, its heartbeat's key):
    # a reader finding it dead fails the response instead of leaving it in_progress forever.
    runner: str | None = None


class ResponsesConfig(BaseModel):
    """`apis.responses` in the run config."""

    model_config = ConfigDict(extra="forbid")

    provider_id: str | None = None  # the orchestrator to use; default: the first `responses` provider
    background_workers: int = Field(2, ge=0)  # background responses run at once by this process
    background_lease_seconds: float = Field(30.0, gt=0)  # a dead worker's background response restarts after this
    max_chain: int = Field(1000, ge=1)  # previous_response_id links followed at most
    # A server's heartbeat says it is alive for this long (renewed every third of it): a streamed response whose
    # server has not beaten for longer (or, on the same host, whose process is gone) is failed by whoever reads it.
    heartbeat_seconds: float = Field(15.0, gt=0)
