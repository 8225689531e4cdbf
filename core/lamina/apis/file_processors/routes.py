"""The file processors API's HTTP route (Llama Stack's path): a file in, text chunks out."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from lamina.apis.file_processors.router import FileProcessorsRouter
from lamina.apis.file_processors.types import ProcessRequest, ProcessResponse
from lamina.apis.vector_io.types import ChunkingStrategy
from lamina.errors import bad_request, validation_error
from lamina.http import json_response, parse_body, route, router_of

MAX_FORM_BYTES = 64 * 1024 * 1024  # a multipart upload is spooled to disk; past this, use the Files API


async def process(request: Request) -> Response:
    """Extract a file's text with the file processor of its type and cut it into chunks. Send JSON `{file_id,
    chunking_strategy?}` for a file uploaded through the Files API, or multipart/form-data with a `file` part (and
    an optional `chunking_strategy` field holding JSON)."""
    router = router_of(request, FileProcessorsRouter)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return json_response(await router.process_file_id(await parse_body(request, ProcessRequest)))
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        raise bad_request(f"upload over {MAX_FORM_BYTES} bytes; upload it to /v1/files and send its file_id")
    async with request.form(max_part_size=MAX_FORM_BYTES) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise bad_request("send the file as a `file` part with a filename", param="file")
        strategy = None
        if isinstance(raw := form.get("chunking_strategy"), str) and raw.strip():
            try:
                strategy = ChunkingStrategy.model_validate_json(raw)
            except ValidationError as exc:
                raise validation_error(exc) from None
        with tempfile.TemporaryDirectory(prefix="lamina-process-") as folder:
            path = Path(folder) / "upload"
            with path.open("wb") as out:
                while block := await upload.read(1 << 20):
                    out.write(block)
            return json_response(await router.process(path, upload.filename, strategy))


ROUTES = [
    route("POST", "/file-processors/process", process, body=ProcessRequest, response=ProcessResponse, prefix="/v1alpha")
]
