"""What a file processor implements: the text of a file of the kinds it declares. Vector-store ingestion and
`POST /v1alpha/file-processors/process` both go through the file processors, so a plugin adding one adds a
format to both.

Attributes and methods
    `extensions: frozenset[str]`
        The file-name extensions it reads, lower case with the dot (`{".md", ".markdown"}`). When two processors
        claim one extension, the first started (run-config order) wins.
    `async extract(path: Path, filename: str) -> str`
        The text of the stored file at `path`, uploaded as `filename`. A file it cannot read is a
        `lamina.ingest.ExtractionError` whose message the user sees (as a 400, or a file's `last_error`). Blocking
        work goes to a thread (`asyncio.to_thread`).

File processors need no run-config entry: when `providers.file_processors` lists none, every installed provider
type of this API that is marked `auto` starts with its default config (core's own text, Markdown, HTML, JSON, CSV
and PDF ones included). Listing some in the run config starts exactly those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class FileProcessor(Protocol):
    extensions: frozenset[str]

    async def extract(self, path: Path, filename: str) -> str: ...
