"""What a responses provider (an orchestrator) implements: run one response's model-and-tools loop.

The responses router owns everything around the loop: ids, the response object's fields, `previous_response_id`
and conversation context, storage (in_progress first, final at the end), background jobs and cancellation,
`sequence_number`s and the `response.created` / `response.in_progress` events. An orchestrator gets a `Turn` and
produces the rest:

    async def respond(self, turn: Turn) -> AsyncIterator[dict]
        Check the request (tools it cannot run, unknown vector stores, ...) and start the first model call, raising
        `LaminaError` for anything wrong (the client gets that status, since nothing has been sent yet); then
        return an async iterator of OpenAI Responses streaming events, as dicts without `sequence_number`:
        `response.output_item.added`, `response.content_part.added`, `response.output_text.delta` ... in OpenAI's
        order, ending with exactly one terminal event, `response.completed`, `response.incomplete` or
        `response.failed`, whose `response` is `turn.response` with `status`, `output`, `usage` (and
        `incomplete_details` / `error`) filled in. Raising later fails the response (`response.failed`). When
        `turn.stream` is false the router reads the terminal event alone, and the others may be left out.

The router closes the iterator when the client goes away (unless the response runs in the background), so the
orchestrator stops, and its upstream calls with it. Core's default orchestrator is the `lamina-responses` plugin
(`inline::responses`): it runs the loop over the inference router's chat completions (guardrails included) and
file search over the vector_io router; its `run_tool` is the one place server-side tools are dispatched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from lamina.apis.conversations.types import Item
from lamina.apis.responses.types import CreateResponse


@dataclass
class Turn:
    request: CreateResponse  # validated; `input` is also in `context`, normalised
    response: dict[str, Any]  # the response object so far: id, created_at, status "in_progress", request echoed
    context: list[Item]  # what the model sees, oldest first: the earlier responses' or conversation's items, then input
    stream: bool  # whether the client streams: the orchestrator may then stream the model's answer too


class ResponsesProvider(Protocol):
    async def respond(self, turn: Turn) -> AsyncIterator[dict[str, Any]]: ...
