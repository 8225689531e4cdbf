"""Core's own file processors, registered through core's `register_providers` like any plugin's: plain text,
Markdown, HTML, JSON, CSV and PDF, each a thin provider over `lamina.ingest`'s extraction functions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lamina import ingest
from lamina.specs import Deps, NoConfig, ProviderSpec


class BuiltinProcessor:
    def __init__(self, extensions: frozenset[str], read: Callable[[Path, str], str]) -> None:
        self.extensions = extensions
        self.read = read

    async def extract(self, path: Path, filename: str) -> str:
        return await asyncio.to_thread(self.read, path, filename)


def _decoded(convert: Callable[[str, str], str]) -> Callable[[Path, str], str]:
    def read(path: Path, filename: str) -> str:
        return convert(ingest.utf8_text(path, filename), filename)

    return read


def _spec(name: str, extensions: set[str], read: Callable[[Path, str], str], description: str) -> ProviderSpec:
    async def create(config: NoConfig, deps: Deps) -> Any:
        return BuiltinProcessor(frozenset(extensions), read)

    return ProviderSpec(
        api="file_processors",
        type=f"inline::{name}",
        config=NoConfig,
        create=create,
        auto=True,
        description=description,
    )


PROVIDERS = [
    _spec("text", ingest.TEXT_TYPES - {".md", ".markdown"}, _decoded(lambda s, _: s), "Plain text files, as they are"),
    _spec("markdown", {".md", ".markdown"}, _decoded(lambda s, _: s), "Markdown, kept as written"),
    _spec("html", {".html", ".htm"}, _decoded(ingest.html_text), "HTML: the visible text, scripts and styles left out"),
    _spec("json", {".json"}, _decoded(ingest.json_text), "JSON, re-indented"),
    _spec("csv", {".csv"}, _decoded(ingest.csv_text), "CSV: one line per row, each value named by its column"),
    _spec("pdf", {".pdf"}, lambda path, _: ingest.pdf_text(path), "PDF: the text of every page (pypdf)"),
]
