"""Schemathesis over /v1/openapi.json of the starter distro's stack (every API it serves) on the fake upstream:
no 5xx, no answer that contradicts the document (status, content type, headers, body schema - OpenAI's error shape,
Anthropic's on /v1/messages - Allow), no schema-violating request accepted. A few examples per operation keep it
to well under a minute. `positive_data_acceptance` is left out: ids that name nothing (a provider, a store) are valid by the
schema and still, rightly, 400s."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from fake_openai import CHAT_MODEL, FakeOpenAI
from hardening_helpers import starter_like
from lamina.testing import serve

# Every API the starter distro serves (an operation's tag is its API). Other installed plugins add routes of their
# own (the playground's, the example plugins'); they are theirs to check.
APIS = [
    "meta", "inference", "files", "vector_io", "safety", "batches", "prompts", "tool_runtime", "responses",
    "conversations", "rerank", "file_processors", "messages",
]  # fmt: skip
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
]

# A connector names an MCP server by URL, and the fuzzer registers connectors with URLs of its making
# (http://0, ...): reading one contacts that server, which is down, and the right answer is the 502/503/504
# naming it (tests/e2e cover those against real servers). Only these reads may answer so; every other
# operation, and these for any other 5xx, must not.
UNREACHABLE_TOOL_SERVERS = """
[[operations]]
include-method = "GET"
include-path-regex = "^/v1beta/connectors/[^/]+"
checks.not_a_server_error.expected-statuses = ["2XX", "3XX", "4XX", 502, 503, 504]
"""


def starter_stack(fake: FakeOpenAI) -> dict[str, Any]:
    """The starter distro's run config with its upstream set: starter_like plus the Responses loop and the MCP
    tool runtime the starter configures (batches, prompts, conversations, rerank, file processors and Anthropic's
    messages start without an entry)."""
    config = starter_like(fake)
    config["providers"]["responses"] = [{"id": "responses", "type": "inline::responses", "config": {}}]
    config["providers"]["tool_runtime"] = [{"id": "mcp", "type": "remote::model-context-protocol", "config": {}}]
    return config


def seed_resources(url: str) -> dict[str, str]:
    """A file, vector store, prompt, conversation (with an item), response and stored completion, by id: the
    fuzzer puts these ids into paths, so operations on them reach past the 404 an invented id gets."""
    model = f"openai/{CHAT_MODEL}"

    def made(response: requests.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    file = made(requests.post(f"{url}/files", files={"file": ("a.txt", b"hello")}, data={"purpose": "assistants"}))
    store = made(requests.post(f"{url}/vector_stores", json={"name": "s", "file_ids": [file["id"]]}))
    prompt = made(requests.post(f"{url}/prompts", json={"prompt": "hi {{name}}", "variables": ["name"]}))
    user_turn = {"type": "message", "role": "user", "content": "x"}
    conversation = made(requests.post(f"{url}/conversations", json={"items": [user_turn]}))
    items = made(requests.get(f"{url}/conversations/{conversation['id']}/items"))
    response = made(requests.post(f"{url}/responses", json={"model": model, "input": "hi"}))
    chat = {"model": model, "messages": [{"role": "user", "content": "x"}], "store": True}
    completion = made(requests.post(f"{url}/chat/completions", json=chat))
    return {
        "file_id": file["id"],
        "vector_store_id": store["id"],
        "prompt_id": prompt["prompt_id"],
        "conversation_id": conversation["id"],
        "item_id": items["data"][0]["id"],
        "response_id": response["id"],
        "completion_id": completion["id"],
    }


@pytest.mark.slow
def test_the_api_keeps_its_openapi_document(fake_server: FakeOpenAI, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        pytest.skip("schemathesis is not installed (the `test` dependency group has it)")
    with serve(starter_stack(fake_server)) as url:
        origin = url.removesuffix("/v1")
        existing = "".join(f'"path.{name}" = "{value}"\n' for name, value in seed_resources(url).items())
        (tmp_path / "schemathesis.toml").write_text(f"{UNREACHABLE_TOOL_SERVERS}\n[parameters]\n{existing}")
        result = subprocess.run(
            [
                st, "run", f"{url}/openapi.json", "--url", origin,
                "--checks", ",".join(CHECKS),
                "--include-tag-regex", f"^({'|'.join(APIS)})$",
                "--phases", "coverage,fuzzing",
                "--max-examples", "3",
                "--workers", "2",
                "--seed", "4711",
                "--suppress-health-check", "all",
                "--max-failures", "100",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # its .schemathesis cache goes there, not into the checkout
        )  # fmt: skip
    output = result.stdout + result.stderr
    assert "Failures:" not in output, output[-20000:]
    assert "Schema Error" not in output and "Server error" not in output, output[-20000:]
    assert " passed" in output, output[-5000:]
