"""Turn an uploaded file into text chunks: extraction by file type, then token chunking with overlap.

Tokens are counted with a regex word-piece approximation, not a model tokenizer: a token is a run of
letters/digits (split into pieces of at most 4 characters, roughly how BPE splits long words) or one
punctuation character. On English prose this lands within ~15% of cl100k counts and costs nothing to load.
"""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

from lamina.errors import LaminaError

TOKEN = re.compile(r"\w{1,4}|[^\w\s]")
AUTO_MAX_TOKENS = 800  # OpenAI's `auto` chunking strategy
AUTO_OVERLAP_TOKENS = 400
TEXT_TYPES = {".txt", ".md", ".markdown", ".text", ".rst", ".log"}
SUPPORTED = sorted(TEXT_TYPES | {".html", ".htm", ".json", ".csv", ".pdf"})


class ExtractionError(LaminaError):
    """A file whose text cannot be extracted; the message is shown to the user (a 400, or a file's `last_error`).
    A LaminaError so that it passes a file processor's `ProviderProxy` as the user's fault, not the provider's."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400, code="invalid_file")


def utf8_text(path: Path, filename: str) -> str:
    """The file as UTF-8 text (a BOM dropped); binary or undecodable content is an ExtractionError."""
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise ExtractionError(f"'{filename}' is binary, not {Path(filename).suffix.lower() or 'plain'} text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionError(f"'{filename}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def extract_text(path: Path, filename: str) -> str:
    """The text of a file in one of core's built-in formats, chosen by the extension of its original name.
    Blocking: run in a thread. (Ingestion and the file-processors API go through the file processors,
    `lamina.apis.file_processors`, which plugins can add formats to; this is what core's own ones do.)"""
    suffix = Path(filename).suffix.lower()
    if suffix == ".pdf":
        text = pdf_text(path)
    elif suffix in TEXT_TYPES or suffix in {".html", ".htm", ".json", ".csv"}:
        decoded = utf8_text(path, filename)
        text = {".html": html_text, ".htm": html_text, ".json": json_text, ".csv": csv_text}.get(
            suffix, lambda s, _name: s
        )(decoded, filename)
    else:
        raise unsupported(filename, SUPPORTED)
    return nonempty(text, filename)


def unsupported(filename: str, supported: list[str]) -> ExtractionError:
    suffix = Path(filename).suffix.lower()
    return ExtractionError(
        f"unsupported file type '{suffix or '(no extension)'}' for '{filename}'; supported: {', '.join(supported)}"
    )


def nonempty(text: str, filename: str) -> str:
    if not text.strip():
        raise ExtractionError(f"'{filename}' contains no text")
    return text


def pdf_text(path: Path) -> str:
    # Imported here so that only PDF ingestion pays pypdf's import time.
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path)
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ExtractionError(f"not a readable PDF: {exc}") from None


class _TextOfHtml(HTMLParser):
    SKIP = frozenset({"script", "style", "head", "noscript"})
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_text(source: str, filename: str) -> str:
    parser = _TextOfHtml()
    parser.feed(source)
    parser.close()
    return re.sub(r"\n\s*\n+", "\n\n", "".join(parser.parts)).strip()


def json_text(source: str, filename: str) -> str:
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise ExtractionError(f"'{filename}' is not valid JSON: {exc}") from None
    return json.dumps(value, indent=2, ensure_ascii=False)


def csv_text(source: str, filename: str) -> str:
    rows = list(csv.reader(io.StringIO(source)))
    if not rows:
        return ""
    header, body = rows[0], rows[1:]
    if not body:
        return ", ".join(header)
    # One line per row, each value named by its column, so a chunk stays meaningful on its own.
    lines = [", ".join(f"{name}: {value}" for name, value in zip(header, row, strict=False)) for row in body]
    return "\n".join(lines)


def count_tokens(text: str) -> int:
    return sum(1 for _ in TOKEN.finditer(text))


def chunk_text(text: str, max_tokens: int = AUTO_MAX_TOKENS, overlap_tokens: int = AUTO_OVERLAP_TOKENS) -> list[str]:
    """Windows of at most `max_tokens` tokens, each starting `max_tokens - overlap_tokens` after the previous.

    A chunk is a slice of the original text (whitespace and layout kept), from its first token to its last.
    """
    if max_tokens < 1 or not 0 <= overlap_tokens < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap_tokens < max_tokens")
    spans = [match.span() for match in TOKEN.finditer(text)]
    chunks: list[str] = []
    step = max_tokens - overlap_tokens
    for start in range(0, len(spans), step):
        window = spans[start : start + max_tokens]
        chunks.append(text[window[0][0] : window[-1][1]])
        if start + max_tokens >= len(spans):
            break
    return chunks
