"""The tutorials' code is the tested example packages: every code block of docs/*.md marked
`<!-- file: PATH -->` is that file of this repository, character for character, and each example package is
shown whole by its tutorial. `python tests/test_docs.py` copies the files into the docs after a change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = re.compile(r"<!-- file: (?P<path>\S+) -->\n```[a-z]*\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)
TUTORIALS = {
    "docs/plugins.md": "tests/plugins/lamina-example",
    "docs/apis.md": "tests/plugins/lamina-example-api",
}


def included(doc: str) -> dict[str, str]:
    return {match["path"]: match["code"] for match in INCLUDE.finditer((ROOT / doc).read_text())}


def package_files(package: str) -> set[str]:
    folder = ROOT / package
    return {
        str(path.relative_to(ROOT))
        for path in folder.rglob("*")
        if path.suffix in {".py", ".toml"} and "__pycache__" not in path.parts and ".egg-info" not in str(path)
    }


@pytest.mark.parametrize("doc", sorted(TUTORIALS))
def test_code_blocks_are_the_files(doc: str) -> None:
    blocks = included(doc)
    assert blocks, f"{doc} includes no file"
    for path, code in blocks.items():
        assert (ROOT / path).is_file(), f"{doc} includes {path}, which does not exist"
        assert code == (ROOT / path).read_text(), f"{doc}: the block of {path} differs; run python tests/test_docs.py"


@pytest.mark.parametrize(("doc", "package"), sorted(TUTORIALS.items()))
def test_the_tutorial_shows_its_whole_package(doc: str, package: str) -> None:
    missing = package_files(package) - set(included(doc))
    assert not missing, f"{doc} does not show {sorted(missing)} of {package}"


def write() -> None:
    """Copy each included file into its block of the docs."""
    for doc in TUTORIALS:
        path = ROOT / doc

        def fill(match: re.Match[str]) -> str:
            return match[0].replace(match["code"], (ROOT / match["path"]).read_text(), 1)

        path.write_text(INCLUDE.sub(fill, path.read_text()))


if __name__ == "__main__":
    write()
