"""The vector stores API's HTTP routes."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.vector_io.router import POLL_AFTER_MS, VectorStoresRouter
from lamina.apis.vector_io.types import (
    AttachFile,
    CreateBatch,
    CreateStore,
    InsertRequest,
    PageQuery,
    QueryRequest,
    SearchRequest,
    SearchResults,
    UpdateFile,
    UpdateStore,
)
from lamina.errors import validation_error
from lamina.http import json_response, parse_body, route, router_of


def _vs(request: Request) -> VectorStoresRouter:
    return router_of(request, VectorStoresRouter)


def _page_query(request: Request) -> PageQuery:
    try:
        return PageQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise validation_error(exc) from None


def _polled(obj: dict[str, Any]) -> Response:
    response = json_response(obj)
    response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return response


async def create_store(request: Request) -> Response:
    """Create a vector store (optionally with files to ingest)."""
    return json_response(await _vs(request).create_store(await parse_body(request, CreateStore)))


async def list_stores(request: Request) -> Response:
    """List vector stores."""
    return json_response(await _vs(request).list_stores(_page_query(request)))


async def get_store(request: Request) -> Response:
    """Retrieve a vector store."""
    return _polled(await _vs(request).store_view(request.path_params["store_id"]))


async def update_store(request: Request) -> Response:
    """Modify a vector store's name, metadata or expiry."""
    body = await parse_body(request, UpdateStore)
    return json_response(await _vs(request).update_store(request.path_params["store_id"], body))


async def delete_store(request: Request) -> Response:
    """Delete a vector store and its chunks."""
    store_id = request.path_params["store_id"]
    await _vs(request).delete_store(store_id)
    return json_response({"id": store_id, "object": "vector_store.deleted", "deleted": True})


async def search_store(request: Request) -> Response:
    """Search a vector store (`search_mode`: vector, keyword or hybrid)."""
    body = await parse_body(request, SearchRequest)
    return json_response(await _vs(request).search(request.path_params["store_id"], body))


async def attach_file(request: Request) -> Response:
    """Add a file to a vector store; ingestion runs in the background."""
    body = await parse_body(request, AttachFile)
    return _polled(await _vs(request).attach(request.path_params["store_id"], body))


async def list_store_files(request: Request) -> Response:
    """List a vector store's files (`filter` by status)."""
    return json_response(await _vs(request).list_files(request.path_params["store_id"], _page_query(request)))


async def get_store_file(request: Request) -> Response:
    """Retrieve a vector store file."""
    return _polled(await _vs(request).get_file(request.path_params["store_id"], request.path_params["file_id"]))


async def update_store_file(request: Request) -> Response:
    """Replace a vector store file's attributes."""
    body = await parse_body(request, UpdateFile)
    params = request.path_params
    return json_response(await _vs(request).update_file(params["store_id"], params["file_id"], body.attributes))


async def delete_store_file(request: Request) -> Response:
    """Remove a file from a vector store (the file itself stays)."""
    params = request.path_params
    await _vs(request).detach(params["store_id"], params["file_id"])
    return json_response({"id": params["file_id"], "object": "vector_store.file.deleted", "deleted": True})


async def store_file_content(request: Request) -> Response:
    """The parsed text of a vector store file, chunk by chunk."""
    params = request.path_params
    return json_response(await _vs(request).file_content(params["store_id"], params["file_id"]))


async def create_batch(request: Request) -> Response:
    """Add several files to a vector store at once."""
    body = await parse_body(request, CreateBatch)
    return _polled(await _vs(request).create_batch(request.path_params["store_id"], body))


async def get_batch(request: Request) -> Response:
    """Retrieve a file batch."""
    return _polled(await _vs(request).batch_view(request.path_params["store_id"], request.path_params["batch_id"]))


async def cancel_batch(request: Request) -> Response:
    """Cancel a file batch: files still in progress are cancelled."""
    params = request.path_params
    return json_response(await _vs(request).cancel_batch(params["store_id"], params["batch_id"]))


async def list_batch_files(request: Request) -> Response:
    """List the files of a batch."""
    params = request.path_params
    return json_response(await _vs(request).list_files(params["store_id"], _page_query(request), params["batch_id"]))


async def insert_chunks(request: Request) -> Response:
    """Insert chunks (with or without precomputed embeddings) into a vector store."""
    return json_response(await _vs(request).insert_chunks(await parse_body(request, InsertRequest)))


async def query_chunks(request: Request) -> Response:
    """Query a vector store with text or an embedding; returns chunks and scores."""
    return json_response(await _vs(request).query_chunks(await parse_body(request, QueryRequest)))


VS = "/vector_stores/{store_id}"
ROUTES = [
    route("POST", "/vector_stores", create_store, body=CreateStore),
    route("GET", "/vector_stores", list_stores, query=PageQuery),
    route("GET", VS, get_store),
    route("POST", VS, update_store, body=UpdateStore),
    route("DELETE", VS, delete_store),
    route("POST", VS + "/search", search_store, body=SearchRequest, response=SearchResults),
    route("POST", VS + "/files", attach_file, body=AttachFile),
    route("GET", VS + "/files", list_store_files, query=PageQuery),
    route("GET", VS + "/files/{file_id}", get_store_file),
    route("POST", VS + "/files/{file_id}", update_store_file, body=UpdateFile),
    route("DELETE", VS + "/files/{file_id}", delete_store_file),
    route("GET", VS + "/files/{file_id}/content", store_file_content),
    route("POST", VS + "/file_batches", create_batch, body=CreateBatch),
    route("GET", VS + "/file_batches/{batch_id}", get_batch),
    route("POST", VS + "/file_batches/{batch_id}/cancel", cancel_batch),
    route("GET", VS + "/file_batches/{batch_id}/files", list_batch_files, query=PageQuery),
    route("POST", "/vector-io/insert", insert_chunks, body=InsertRequest),
    route("POST", "/vector-io/query", query_chunks, body=QueryRequest),
]
