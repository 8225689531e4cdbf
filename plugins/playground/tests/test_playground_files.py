"""The playground's files as the server serves them: where, compressed, self-contained, and within its weight.

The page itself is exercised in a real browser by tests/e2e/test_playground.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.resources import files

import pytest
import requests
from lamina.testing import serve

STATIC = files("lamina_playground") / "static"
PAGE_WEIGHT_LIMIT = 300 * 1024  # compressed bytes, every file the page loads


def static_files() -> list[str]:
    found: list[str] = []

    def walk(folder: object, prefix: str) -> None:
        for entry in folder.iterdir():  # type: ignore[attr-defined]
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            else:
                found.append(prefix + entry.name)

    walk(STATIC, "")
    return sorted(found)


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    config = {"providers": {"safety": [{"id": "rules", "type": "inline::rules", "config": {}}]}}
    with serve(config) as url:
        yield url.removesuffix("/v1")


def test_the_playground_is_served_under_its_prefix(site: str) -> None:
    moved = requests.get(f"{site}/playground", allow_redirects=False, timeout=10)
    assert moved.status_code == 308 and moved.headers["location"] == "/playground/"
    page = requests.get(f"{site}/playground/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>Lamina playground</title>" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    # Everything else is still the API's.
    assert requests.get(f"{site}/v1/health", timeout=10).json() == {"status": "OK"}
    other = requests.get(f"{site}/playgroundx", timeout=10)
    assert other.status_code == 404 and "error" in other.json()
    assert requests.get(f"{site}/playground/nope.js", timeout=10).status_code == 404


def test_every_file_the_page_references_is_served(site: str) -> None:
    page = requests.get(f"{site}/playground/", timeout=10).text
    wanted = set(re.findall(r'(?:src|href)="([^":]+)"', page))
    for name in static_files():
        if name.endswith(".js"):
            source = (STATIC / name).read_text()  # type: ignore[operator]
            wanted |= {f"js/{module}" for module in re.findall(r'from "\./([\w.]+)"', source)}
    assert {"style.css", "js/main.js", "js/api.js"} <= wanted
    for name in wanted:
        response = requests.get(f"{site}/playground/{name}", timeout=10)
        assert response.status_code == 200, name
    assert wanted | {"index.html"} == set(static_files())  # and nothing ships that the page does not use


def test_nothing_is_loaded_from_elsewhere() -> None:
    for name in static_files():
        text = (STATIC / name).read_text()  # type: ignore[operator]
        assert not re.search(r"(?:https?:)?//[\w-]+\.[\w.-]+/", text), f"{name} refers to another host"


def test_the_page_is_compressed_and_within_its_weight(site: str) -> None:
    total = 0
    for name in static_files():
        path = "" if name == "index.html" else name
        response = requests.get(
            f"{site}/playground/{path}", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=10
        )
        assert response.headers.get("content-encoding") == "gzip", name
        total += len(response.raw.read())
    assert 0 < total <= PAGE_WEIGHT_LIMIT, total
