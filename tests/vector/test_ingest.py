"""Text extraction and chunking (core's lamina.ingest): no model, no server."""

from __future__ import annotations

from pathlib import Path

import pytest
from lamina.ingest import TOKEN, ExtractionError, chunk_text, count_tokens, extract_text


def test_chunks_have_the_size_and_overlap_asked_for() -> None:
    text = " ".join(f"w{i}" for i in range(1000))  # one token per word
    chunks = chunk_text(text, 100, 20)
    assert all(count_tokens(c) <= 100 for c in chunks)
    assert chunks[0].split()[-20:] == chunks[1].split()[:20]  # the overlap
    assert chunks[0].startswith("w0 ") and chunks[-1].endswith("w999")
    assert len(chunks) == 13  # starts at 0, 80, ..., 960
    assert chunk_text(text, 2000, 0) == [text]
    assert chunk_text("", 100, 10) == []
    with pytest.raises(ValueError):
        chunk_text(text, 100, 100)


def test_long_words_count_as_several_tokens() -> None:
    assert [m.group() for m in TOKEN.finditer("internationalisation, ok")] == [
        "inte", "rnat", "iona", "lisa", "tion", ",", "ok",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "body", "expected", "absent"),
    [
        (
            "a.html",
            "<html><head><style>x{}</style></head><body><p>Hello</p><script>bad()</script></body>",
            "Hello",
            "bad",
        ),
        ("a.json", '{"k": ["caf\\u00e9"]}', "café", "\\u00e9"),
        ("a.csv", "name,age\nAda,36\n", "name: Ada, age: 36", None),
        ("a.md", "# Title\ntext", "# Title", None),
    ],
)
def test_extraction(tmp_path: Path, name: str, body: str, expected: str, absent: str | None) -> None:
    path = tmp_path / "blob"
    path.write_text(body)
    text = extract_text(path, name)
    assert expected in text
    if absent:
        assert absent not in text


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("a.exe", b"MZ", "unsupported file type '.exe'"),
        ("noext", b"text", "unsupported file type '(no extension)'"),
        ("a.txt", b"", "contains no text"),
        ("a.txt", b"  \n ", "contains no text"),
        ("a.txt", b"abc\x00def", "binary"),
        ("a.json", b"{nope", "not valid JSON"),
        ("a.pdf", b"%PDF-1.4 garbage", "not a readable PDF"),
    ],
)
def test_extraction_errors(tmp_path: Path, name: str, body: bytes, message: str) -> None:
    path = tmp_path / "blob"
    path.write_bytes(body)
    with pytest.raises(ExtractionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        extract_text(path, name)
