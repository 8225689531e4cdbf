"""The prompts API over HTTP: create, get (default or ?version=), update with a version check, versions, default
version, list, delete; and `render_prompt`, what the Responses API's `prompt` parameter calls."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from e2e_helpers import assert_openai_error
from lamina.apis.prompts.router import PromptsRouter
from lamina.config import resolve
from lamina.errors import LaminaError
from lamina.resolver import start_stack
from lamina.testing import serve


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve({"storage": {"dir": str(tmp_path_factory.mktemp("prompts"))}}) as url:
        yield url


def test_versions_default_and_delete(base_url: str) -> None:
    made = requests.post(
        f"{base_url}/prompts", json={"prompt": "Hello {{ name }}, you are {{role}}.", "variables": ["name", "role"]}
    )
    assert made.status_code == 200, made.text
    prompt = made.json()
    assert re.fullmatch(r"pmpt_[0-9a-f]{48}", prompt["prompt_id"])
    assert (prompt["version"], prompt["is_default"], prompt["variables"]) == (1, True, ["name", "role"])
    pid = prompt["prompt_id"]

    second = requests.put(
        f"{base_url}/prompts/{pid}", json={"prompt": "Hi {{name}}", "version": 1, "variables": ["name"]}
    )
    assert second.json()["version"] == 2 and second.json()["is_default"]
    stale = requests.put(f"{base_url}/prompts/{pid}", json={"prompt": "Yo", "version": 1})
    assert_openai_error(stale, 409, param="version", message_contains="latest")
    third = requests.put(f"{base_url}/prompts/{pid}", json={"prompt": "Hey", "version": 2, "set_as_default": False})
    assert third.json()["version"] == 3 and not third.json()["is_default"]

    assert requests.get(f"{base_url}/prompts/{pid}").json()["prompt"] == "Hi {{name}}"  # the default: version 2
    assert requests.get(f"{base_url}/prompts/{pid}", params={"version": 1}).json()["prompt"].startswith("Hello")
    versions = requests.get(f"{base_url}/prompts/{pid}/versions").json()["data"]
    assert [(v["version"], v["is_default"]) for v in versions] == [(1, False), (2, True), (3, False)]

    made_default = requests.put(f"{base_url}/prompts/{pid}/set-default-version", json={"version": 3})
    assert made_default.json()["version"] == 3 and made_default.json()["is_default"]
    assert requests.get(f"{base_url}/prompts/{pid}").json()["prompt"] == "Hey"
    listed = requests.get(f"{base_url}/prompts").json()["data"]
    assert [(p["prompt_id"], p["version"]) for p in listed if p["prompt_id"] == pid] == [(pid, 3)]

    assert requests.delete(f"{base_url}/prompts/{pid}").status_code == 200
    assert_openai_error(requests.get(f"{base_url}/prompts/{pid}"), 404, param="prompt_id")
    assert_openai_error(requests.get(f"{base_url}/prompts/{pid}/versions"), 404, param="prompt_id")
    assert pid not in [p["prompt_id"] for p in requests.get(f"{base_url}/prompts").json()["data"]]


def test_bad_input_and_unknown_ids(base_url: str) -> None:
    undeclared = requests.post(f"{base_url}/prompts", json={"prompt": "Hi {{name}}"})
    assert_openai_error(undeclared, 400, message_contains="undeclared variables ['name']")
    assert_openai_error(requests.post(f"{base_url}/prompts", json={"variables": []}), 400, param="prompt")
    assert_openai_error(requests.post(f"{base_url}/prompts", json={"prompt": 3}), 400, param="prompt")
    pid = requests.post(f"{base_url}/prompts", json={"prompt": "x"}).json()["prompt_id"]
    assert_openai_error(requests.put(f"{base_url}/prompts/{pid}", json={"prompt": "y"}), 400, param="version")
    assert_openai_error(requests.get(f"{base_url}/prompts/{pid}", params={"version": "two"}), 400, param="version")
    assert_openai_error(requests.get(f"{base_url}/prompts/{pid}", params={"version": 9}), 404, param="version")
    missing = requests.put(f"{base_url}/prompts/{pid}/set-default-version", json={"version": 9})
    assert_openai_error(missing, 404, param="version")
    unknown = "pmpt_" + "0" * 48
    assert_openai_error(requests.get(f"{base_url}/prompts/{unknown}"), 404, param="prompt_id")
    assert_openai_error(requests.delete(f"{base_url}/prompts/{unknown}"), 404, param="prompt_id")
    assert_openai_error(requests.put(f"{base_url}/prompts/{unknown}", json={"prompt": "y", "version": 1}), 404)


async def test_render_prompt_and_restart(tmp_path: Path) -> None:
    config = {"storage": {"dir": str(tmp_path)}}
    async with start_stack(resolve(config, "<test>")) as stack:
        prompts = stack.api(PromptsRouter)
        made = await prompts.create_from(
            text="Write about {{topic}} for {{ audience }}.", variables=["topic", "audience"]
        )
        rendered = await prompts.render_prompt(made.prompt_id, None, {"topic": "tides", "audience": "kids"})
        assert rendered == "Write about tides for kids."
        with pytest.raises(LaminaError) as missing:
            await prompts.render_prompt(made.prompt_id, "1", {"topic": "tides"})
        assert missing.value.status == 400 and missing.value.param == "prompt.variables"
        with pytest.raises(LaminaError) as unknown:
            await prompts.render_prompt(made.prompt_id, 1, {"topic": "a", "audience": "b", "mood": "c"})
        assert unknown.value.status == 400 and "mood" in unknown.value.message
        with pytest.raises(LaminaError) as bad_version:
            await prompts.render_prompt(made.prompt_id, "latest", {})
        assert bad_version.value.param == "prompt.version"
    async with start_stack(resolve(config, "<test>")) as stack:  # the same storage: the prompt is still there
        rendered = await stack.api(PromptsRouter).render_prompt(made.prompt_id, "1", {"topic": "a", "audience": "b"})
        assert rendered == "Write about a for b."
