"""The file processors router: picks the processor of a file by its extension; vector-store ingestion and
`/v1alpha/file-processors/process` both extract text through `extract`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lamina.apis.file_processors.provider import FileProcessor
from lamina.apis.file_processors.types import ProcessRequest
from lamina.apis.files.router import FilesRouter
from lamina.apis.vector_io.types import ChunkingStrategy
from lamina.errors import LaminaError, bad_request
from lamina.ingest import ExtractionError, chunk_text, nonempty, unsupported


class FileProcessorsRouter:
    def __init__(self, providers: dict[str, FileProcessor], files: FilesRouter) -> None:
        self.files = files
        self.by_extension: dict[str, tuple[str, FileProcessor]] = {}
        for provider_id, provider in providers.items():
            for extension in provider.extensions:
                self.by_extension.setdefault(extension.lower(), (provider_id, provider))

    def supported(self) -> list[str]:
        return sorted(self.by_extension)

    async def extract(self, path: Path, filename: str) -> tuple[str, str]:
        """(text, processor id) of a stored file. Raises ExtractionError: unsupported, unreadable or empty."""
        found = self.by_extension.get(Path(filename).suffix.lower())
        if found is None:
            raise unsupported(filename, self.supported())
        provider_id, provider = found
        return nonempty(await provider.extract(path, filename), filename), provider_id

    async def process(self, path: Path, filename: str, strategy: ChunkingStrategy | None) -> dict[str, Any]:
        try:
            text, processor = await self.extract(path, filename)
        except ExtractionError as exc:
            code = "unsupported_file" if "unsupported file type" in str(exc) else "invalid_file"
            raise bad_request(str(exc), param="file", code=code) from None
        static = (strategy or ChunkingStrategy()).resolved()["static"]
        chunks = chunk_text(text, static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])
        return {
            "chunks": [
                {"content": chunk, "chunk_id": f"{filename}#{i}", "metadata": {"filename": filename, "chunk_index": i}}
                for i, chunk in enumerate(chunks)
            ],
            "metadata": {"filename": filename, "processor": processor, "characters": len(text), "chunks": len(chunks)},
        }

    async def process_file_id(self, request: ProcessRequest) -> dict[str, Any]:
        try:
            file = await self.files.get_file(request.file_id)
        except LaminaError as exc:
            exc.param = "file_id"
            raise
        answer = await self.process(
            await self.files.file_path(request.file_id), file.filename, request.chunking_strategy
        )
        answer["metadata"]["file_id"] = request.file_id
        for chunk in answer["chunks"]:
            chunk["chunk_id"] = f"{request.file_id}#{chunk['metadata']['chunk_index']}"
            chunk["metadata"]["file_id"] = request.file_id
        return answer
