"""The Batches API's wire models (OpenAI's) and its config."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from lamina.access import Owner
from lamina.specs import ProviderConfig

# What a batch may run: OpenAI's batch endpoints that this server serves. A line's `url` must equal its batch's
# `endpoint`.
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations", "/v1/responses")
Status = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"]
FINAL: tuple[Status, ...] = ("failed", "completed", "expired", "cancelled")


class BatchesConfig(ProviderConfig):
    """`apis.batches`: how much of the server batches may use, so interactive traffic keeps its latency."""

    max_in_flight_per_batch: int = Field(16, ge=1, description="requests one batch runs at once")
    max_in_flight: int = Field(32, ge=1, description="requests all batches of this process run at once")
    concurrent_batches: int = Field(2, ge=1, description="batches this process works on at once")
    lease_seconds: float = Field(
        30, gt=0, description="how long a batch stays with a process that stopped renewing it (crashed)"
    )
    max_lines: int = Field(50_000, ge=1, description="requests one input file may hold (OpenAI: 50,000)")
    completion_window_seconds: int = Field(
        24 * 3600,
        ge=1,
        description="how long a batch may run before it expires (its completion_window, 24h); shorter to test expiry",
    )


class CreateBatch(BaseModel):
    input_file_id: str
    endpoint: str
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = Field(None, max_length=16)
    output_expires_after: dict[str, Any] | None = None


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class Batch(BaseModel):
    """OpenAI's batch object."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: Status
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None


class BatchRecord(BaseModel):
    """What the registry keeps per batch: the OpenAI object, its place in listings, and its owner."""

    batch: Batch
    order: str
    owner: Owner | None = None  # who made it (lamina.auth); its lines run as this caller
    # The API key it was made with (lamina.auth): its lines count against that key's quotas and usage too.
    key_id: str | None = None
    key_limits: dict[str, int] = {}


class LineResult(BaseModel):
    """One input line's outcome, stored under the batch and the line's number as soon as it is known, so a
    batch resumed after a crash runs only the lines without one, and each line's result is written once."""

    line: int
    id: str
    custom_id: str
    status_code: int
    body: str  # the answer's JSON text as the route sent it: kept as text, so storing it costs no JSON round trip


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class ListQuery(BaseModel):
    after: str | None = None
    limit: int = Field(20, ge=1, le=100)
