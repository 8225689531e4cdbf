"""The Files API's HTTP routes: uploads stream to the files provider, never whole into memory."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lamina.apis.files.provider import FilesProvider, Upload
from lamina.apis.files.router import FilesRouter
from lamina.apis.files.types import (
    PURPOSES,
    ExpiresAfter,
    FileDeleted,
    FileList,
    FileObject,
    ListQuery,
    UploadForm,
    too_large,
)
from lamina.errors import LaminaError, bad_request, validation_error
from lamina.http import json_response, route, router_of

FORM_ALLOWANCE = 1024 * 1024  # what a multipart body may hold besides the file: its framing and form fields


def _files(request: Request) -> FilesRouter:
    return router_of(request, FilesRouter)


async def receive_multipart(request: Request, provider: FilesProvider) -> tuple[Upload, str, dict[str, str]]:
    """Stream a multipart/form-data body: the `file` part into a provider upload, other fields into a dict."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise bad_request("send the file as multipart/form-data with a `file` part", code="invalid_content_type")

    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > provider.max_upload_bytes + FORM_ALLOWANCE:
        raise too_large(provider.max_upload_bytes)  # refused before reading a byte of it

    upload = await provider.begin_upload()
    fields: dict[str, str] = {}
    filename: str | None = None
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "name": None, "is_file": False}
    refusals: list[LaminaError] = []
    received_file: list[bytes] = []

    def on_part_begin() -> None:
        state.update(headers={}, name=None, is_file=False, value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["headers"][state["field"].lower()] = state["headers"].get(state["field"].lower(), b"") + data[start:end]

    def on_header_end() -> None:
        state["field"] = b""

    def on_headers_finished() -> None:
        nonlocal filename
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["name"] = disposition.get(b"name", b"").decode("utf-8", "replace")
        if state["name"] == "file":
            if filename is not None:
                refusals.append(bad_request("the multipart body has more than one `file` part; send one", param="file"))
            state["is_file"] = True
            filename = disposition.get(b"filename", b"upload").decode("utf-8", "replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["is_file"]:
            received_file.append(data[start:end])  # written off the event loop, after this chunk is parsed
        elif len(state["value"]) < 65536:  # form fields are small; a huge one is not ours to keep
            state["value"] += data[start:end]

    def write_received() -> None:
        for piece in received_file:
            upload.write(piece)  # raises too_large past the limit

    def on_part_end() -> None:
        if not state["is_file"] and state["name"]:
            fields[state["name"]] = state["value"].decode("utf-8", "replace")

    parser = MultipartParser(
        params[b"boundary"],
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            try:
                parser.write(chunk)
            except Exception as exc:
                raise bad_request(f"malformed multipart body: {exc}", code="invalid_multipart") from None
            if refusals:
                raise refusals[0]
            if received_file:
                # Disk writes (and the provider's own work) in a thread: the loop keeps serving other requests.
                await asyncio.to_thread(write_received)  # past the limit: a 413 now, nothing more is read
                received_file.clear()
        try:
            parser.finalize()
        except Exception as exc:
            raise bad_request(f"malformed multipart body: {exc}", code="invalid_multipart") from None
    except BaseException:
        await asyncio.to_thread(upload.abort)
        raise
    if filename is None:
        upload.abort()
        raise bad_request("the multipart body has no `file` part", param="file", code="missing_required_parameter")
    return upload, filename, fields


def _expires_after(fields: dict[str, str]) -> int | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    try:
        parsed = ExpiresAfter.model_validate({"anchor": anchor or "created_at", "seconds": seconds})
    except ValidationError as exc:
        error = validation_error(exc)
        error.param = f"expires_after[{error.param}]" if error.param else None  # the form field's name
        raise error from None
    return parsed.seconds


async def upload_file(request: Request) -> Response:
    """Upload a file (multipart/form-data: `file`, `purpose`, optional `expires_after[anchor|seconds]`)."""
    router = _files(request)
    upload, filename, fields = await receive_multipart(request, router.provider)
    try:
        purpose = fields.get("purpose")
        if not purpose:
            raise bad_request("`purpose` is required", param="purpose", code="missing_required_parameter")
        if purpose not in PURPOSES:
            raise bad_request(f"unknown purpose '{purpose}'; one of: {', '.join(PURPOSES)}", param="purpose")
        expires_after = _expires_after(fields)
        # Only the last path component is kept, and only as a label: storage is by id.
        filename = filename.replace("\\", "/").rsplit("/", 1)[-1] or "upload"
    except LaminaError:
        upload.abort()
        raise
    return json_response(await router.upload(upload, filename=filename, purpose=purpose, expires_after=expires_after))


def _query(request: Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise validation_error(exc) from None


async def list_files(request: Request) -> Response:
    """List files, newest first by default (cursor pagination with `after`)."""
    return json_response(await _files(request).list_files(_query(request, ListQuery)))


async def get_file(request: Request) -> Response:
    """Retrieve a file's metadata."""
    return json_response(await _files(request).get_file(request.path_params["file_id"]))


async def get_file_content(request: Request) -> Response:
    """Download a file's bytes (streamed from the provider)."""
    file, chunks = await _files(request).content(request.path_params["file_id"])
    quoted = quote(file.filename)  # RFC 6266: a name needing escapes goes in filename*, as Starlette does
    disposition = (
        f"attachment; filename*=utf-8''{quoted}" if quoted != file.filename else f'attachment; filename="{quoted}"'
    )
    # nosniff: a browser must not render an uploaded file as HTML (it is served from the API's own origin).
    headers = {
        "content-length": str(file.bytes),
        "content-disposition": disposition,
        "x-content-type-options": "nosniff",
    }
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)


async def delete_file(request: Request) -> Response:
    """Delete a file."""
    return json_response(await _files(request).delete_file(request.path_params["file_id"]))


ROUTES = [
    route("POST", "/files", upload_file, response=FileObject, form=UploadForm),
    route("GET", "/files", list_files, response=FileList, query=ListQuery),
    route("GET", "/files/{file_id}", get_file, response=FileObject),
    route("GET", "/files/{file_id}/content", get_file_content),
    route("DELETE", "/files/{file_id}", delete_file, response=FileDeleted),
]
