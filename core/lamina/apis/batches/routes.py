"""The Batches API's HTTP routes (OpenAI's)."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.batches.router import BatchesRouter
from lamina.apis.batches.types import Batch, BatchList, CreateBatch, ListQuery
from lamina.errors import validation_error
from lamina.http import json_response, parse_body, route, router_of


def _batches(request: Request) -> BatchesRouter:
    return router_of(request, BatchesRouter)


async def create_batch(request: Request) -> Response:
    """Create a batch from an uploaded JSONL file of requests (purpose `batch`)."""
    return json_response(await _batches(request).create(await parse_body(request, CreateBatch)))


async def list_batches(request: Request) -> Response:
    """List batches, newest first."""
    try:
        query = ListQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise validation_error(exc) from None
    return json_response(await _batches(request).list_batches(query))


async def get_batch(request: Request) -> Response:
    """Retrieve a batch."""
    return json_response(await _batches(request).get(request.path_params["batch_id"]))


async def cancel_batch(request: Request) -> Response:
    """Cancel a batch: no new line starts; lines already running finish, and the batch ends `cancelled`."""
    return json_response(await _batches(request).cancel(request.path_params["batch_id"]))


ROUTES = [
    route("POST", "/batches", create_batch, body=CreateBatch, response=Batch),
    route("GET", "/batches", list_batches, query=ListQuery, response=BatchList),
    route("GET", "/batches/{batch_id}", get_batch, response=Batch),
    route("POST", "/batches/{batch_id}/cancel", cancel_batch, response=Batch),
]
