"""`POST /v1alpha/file-processors/process` and vector-store ingestion through the same file processors: core's
built-in ones, and a third-party one (a plugin registered on the plugin manager, for a made-up extension) that
adds its format to both at once. Embeddings come from the fake OpenAI upstream on 127.0.0.1."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import lamina
import pytest
import requests
from lamina.plugins import make_plugin_manager
from lamina.specs import NoConfig
from lamina.testing import serve
from openai import OpenAI
from test_vector_stores import minimal_pdf

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from fake_openai import EMBEDDING_MODEL, FakeOpenAI


class Shouter:
    """Reads `.shout` files: the text upper-cased (so the test can tell this processor ran)."""

    extensions = frozenset({".shout"})

    async def extract(self, path: Path, filename: str) -> str:
        return path.read_text().upper()


async def create_shouter(config: NoConfig, deps: lamina.Deps) -> Shouter:
    return Shouter()


def shout_plugin() -> ModuleType:
    module = ModuleType("lamina_test_shout")

    @lamina.hookimpl
    def register_providers() -> list[lamina.ProviderSpec]:
        return [
            lamina.ProviderSpec(
                api="file_processors", type="inline::shout", config=NoConfig, create=create_shouter, auto=True
            )
        ]

    module.register_providers = register_providers  # type: ignore[attr-defined]
    return module


def config(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    providers: dict[str, Any] = {
        "inference": [
            {
                "id": "fake",
                "type": "remote::openai",
                "config": {
                    "base_url": fake.base_url,
                    "models": [EMBEDDING_MODEL],
                    "embedding_models": [EMBEDDING_MODEL],
                },
            }
        ],
        "files": [{"id": "files", "type": "inline::localfs"}],
        "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib"}],
        **extra,
    }
    return {"providers": providers, "apis": {"vector_io": {"default_embedding_model": f"fake/{EMBEDDING_MODEL}"}}}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def url(fake: FakeOpenAI) -> Iterator[str]:
    pm = make_plugin_manager()
    pm.register(shout_plugin(), name="lamina_test_shout")
    with serve(config(fake), pm=pm) as base:
        yield base


def process_upload(url: str, name: str, body: bytes, **fields: str) -> requests.Response:
    alpha = url.removesuffix("/v1") + "/v1alpha"
    return requests.post(f"{alpha}/file-processors/process", files={"file": (name, body)}, data=fields, timeout=30)


def process_id(url: str, **body: Any) -> requests.Response:
    return requests.post(url.removesuffix("/v1") + "/v1alpha/file-processors/process", json=body, timeout=30)


@pytest.mark.parametrize(
    ("name", "body", "processor", "present", "absent"),
    [
        ("notes.txt", b"Plain notes about otters.", "inline-text", "otters", None),
        ("readme.md", b"# Otters\nThey hold hands.", "inline-markdown", "# Otters", None),
        ("page.html", b"<html><script>bad()</script><p>Otters float</p></html>", "inline-html", "Otters float", "bad"),
        ("doc.pdf", minimal_pdf("Otters crack shells"), "inline-pdf", "Otters crack shells", None),
        ("loud.shout", b"otters are loud", "inline-shout", "OTTERS ARE LOUD", None),
    ],
)
def test_process_an_upload(url: str, name: str, body: bytes, processor: str, present: str, absent: str | None) -> None:
    answer = process_upload(url, name, body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["metadata"]["processor"] == processor
    assert len(result["chunks"]) == 1 and present in result["chunks"][0]["content"]
    assert absent is None or absent not in result["chunks"][0]["content"]


def test_process_a_stored_file_with_static_chunking(url: str) -> None:
    client = OpenAI(base_url=url, api_key="unused", max_retries=0)
    text = " ".join(f"w{i}" for i in range(300))  # one token a word
    uploaded = client.files.create(file=("words.txt", text.encode()), purpose="assistants")
    strategy = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    answer = process_id(url, file_id=uploaded.id, chunking_strategy=strategy)
    assert answer.status_code == 200, answer.text
    chunks = answer.json()["chunks"]
    assert [c["content"].split()[0] for c in chunks] == ["w0", "w100", "w200"]
    assert chunks[1]["chunk_id"] == f"{uploaded.id}#1" and chunks[1]["metadata"]["file_id"] == uploaded.id
    # The same strategy as multipart form field.
    form = process_upload(url, "words.txt", text.encode(), chunking_strategy=json.dumps(strategy))
    assert [c["content"] for c in form.json()["chunks"]] == [c["content"] for c in chunks]


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [("x.exe", b"MZ", "unsupported_file"), ("empty.txt", b"  ", "invalid_file"), ("bin.md", b"a\x00b", "invalid_file")],
)
def test_unreadable_files_are_400(url: str, name: str, body: bytes, code: str) -> None:
    answer = process_upload(url, name, body)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code
    if code == "unsupported_file":
        assert ".shout" in answer.json()["error"]["message"]  # the supported list includes the plugin's


def test_bad_requests(url: str) -> None:
    assert process_id(url, file_id="file-nope").status_code == 404
    assert process_id(url).status_code == 400
    bad_strategy = process_upload(url, "a.txt", b"text", chunking_strategy='{"type": "static"}')
    assert bad_strategy.status_code == 400
    no_file = requests.post(
        url.removesuffix("/v1") + "/v1alpha/file-processors/process", files={"other": ("a", b"x")}, timeout=30
    )
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"


def test_ingestion_goes_through_the_plugin_processor(url: str) -> None:
    client = OpenAI(base_url=url, api_key="unused", max_retries=0)
    store = client.vector_stores.create(name="shouts")
    done = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("a.shout", b"quiet otters"))
    assert done.status == "completed", done.last_error
    content = client.vector_stores.files.content(file_id=done.id, vector_store_id=store.id)
    assert [part.text for part in content] == ["QUIET OTTERS"]


def test_without_the_plugin_the_extension_is_unsupported_everywhere(fake: FakeOpenAI) -> None:
    with serve(config(fake)) as base:
        assert process_upload(base, "a.shout", b"x").json()["error"]["code"] == "unsupported_file"
        client = OpenAI(base_url=base, api_key="unused", max_retries=0)
        store = client.vector_stores.create(name="no-shouts")
        done = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("a.shout", b"x"))
        assert done.status == "failed" and done.last_error is not None
        assert done.last_error.code == "unsupported_file"


def test_a_run_config_listing_processors_starts_only_those(fake: FakeOpenAI) -> None:
    only_markdown = {"file_processors": [{"id": "md", "type": "inline::markdown"}]}
    with serve(config(fake, **only_markdown)) as base:
        assert process_upload(base, "a.md", b"# yes").json()["metadata"]["processor"] == "md"
        refused = process_upload(base, "a.txt", b"no").json()["error"]
        assert refused["code"] == "unsupported_file" and "supported: .markdown, .md" in refused["message"]
