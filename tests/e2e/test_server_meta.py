"""Model registration (persisted across restarts) and the server's own endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from e2e_helpers import SECRET, assert_healthy, assert_openai_error, gateway_config
from fake_openai import CHAT_MODEL, FakeOpenAI
from lamina import __version__
from lamina.testing import serve
from openai import OpenAI

ALIAS = "team/default-chat"


def test_register_alias_persists_across_restart(fake: FakeOpenAI, tmp_path: Path) -> None:
    config = gateway_config(fake, storage={"dir": str(tmp_path)})
    with serve(config) as url:
        created = requests.post(
            f"{url}/models", json={"id": ALIAS, "provider_id": "fake", "provider_model_id": CHAT_MODEL}, timeout=10
        )
        assert created.status_code == 200, created.text
        assert created.json()["id"] == ALIAS and created.json()["source"] == "registered"
        assert_openai_error(
            requests.post(f"{url}/models", json={"id": ALIAS, "provider_id": "fake"}, timeout=10),
            409,
            code="conflict",
            param="id",
        )
        assert_openai_error(
            requests.post(f"{url}/models", json={"id": "x", "provider_id": "nobody"}, timeout=10),
            400,
            param="provider_id",
        )
        # Deleting a model its provider reports is refused: only registrations can be deleted.
        assert_openai_error(requests.delete(f"{url}/models/fake/{CHAT_MODEL}", timeout=10), 400, param="model")

    with serve(config) as url:  # same storage dir: the alias is still there and still routes
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        assert ALIAS in {m.id for m in client.models.list()}
        assert client.models.retrieve(ALIAS).model_extra["provider_model_id"] == CHAT_MODEL
        reply = client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "via alias"}])
        assert reply.model == ALIAS and reply.choices[0].message.content == "echo: via alias"
        assert fake.hits("/v1/chat/completions")[-1]["body"]["model"] == CHAT_MODEL
        deleted = client.models.delete(ALIAS)
        assert (deleted.id, deleted.deleted) == (ALIAS, True)
        assert_openai_error(requests.get(f"{url}/models/{ALIAS}", timeout=10), 404, code="model_not_found")

    with serve(config) as url:  # the deletion persisted too
        assert ALIAS not in {m["id"] for m in requests.get(f"{url}/models", timeout=10).json()["data"]}
        assert_healthy(url)


def test_health_and_version(base_url: str) -> None:
    assert_healthy(base_url)
    response = requests.get(f"{base_url}/version", timeout=10)
    assert response.status_code == 200 and response.json() == {"version": __version__}


def test_providers_redact_api_key(base_url: str) -> None:
    listed = requests.get(f"{base_url}/providers", timeout=10).json()
    assert listed["object"] == "list"
    configured = [p["provider_id"] for p in listed["data"] if p["api"] != "file_processors"]
    assert configured == ["fake", "slow", "down"]
    # Core's file processors start without a run-config entry (ProviderSpec.auto) and are listed like the others.
    assert {p["provider_id"] for p in listed["data"] if p["api"] == "file_processors"} >= {"inline-pdf", "inline-text"}
    one = requests.get(f"{base_url}/providers/fake", timeout=10)
    assert one.status_code == 200
    body = one.json()
    assert (body["api"], body["provider_type"], body["package"]) == (
        "inference",
        "remote::openai",
        "lamina-remote-openai",
    )
    assert body["version"] == "0.1.0"
    assert body["config"]["api_key"] == "********"
    assert body["config"]["max_retries"] == 2
    # Validated values, as the provider runs with them: defaults the run config left out are shown too.
    assert body["config"]["connect_timeout"] == 10.0 and body["config"]["headers"] == {}
    assert SECRET not in one.text and SECRET not in requests.get(f"{base_url}/providers", timeout=10).text
    assert_openai_error(requests.get(f"{base_url}/providers/nope", timeout=10), 404, param="provider_id")


@pytest.mark.parametrize(
    "path", ["/health", "/version", "/providers", "/providers/fake", "/inspect/routes", "/inspect/config"]
)
def test_llama_stack_admin_routes_answer_as_the_v1_ones(base_url: str, path: str) -> None:
    admin = base_url.removesuffix("/v1") + "/v1alpha/admin"
    response = requests.get(admin + path, timeout=10)
    assert response.status_code == 200
    assert response.json() == requests.get(base_url + path, timeout=10).json()


def test_inspect_routes(base_url: str) -> None:
    routes = requests.get(f"{base_url}/inspect/routes", timeout=10).json()["data"]
    pairs = {(r["path"], method) for r in routes for method in r["methods"]}
    expected = {
        ("/v1/chat/completions", "POST"),
        ("/v1/completions", "POST"),
        ("/v1/embeddings", "POST"),
        ("/v1/models", "GET"),
        ("/v1/models", "POST"),
        ("/v1/models/{model_id:path}", "GET"),
        ("/v1/models/{model_id:path}", "DELETE"),
        ("/v1/health", "GET"),
        ("/v1/openapi.json", "GET"),
    }
    assert expected <= pairs
    assert {r["api"] for r in routes if r["path"] == "/v1/chat/completions"} == {"inference"}


def test_inspect_config_shows_the_run_config_with_secrets_masked(fake: FakeOpenAI) -> None:
    config = gateway_config(fake)
    config["providers"]["inference"][2]["config"]["base_url"] = "http://ops:hunter2@127.0.0.1:9/v1"
    with serve(config) as url:
        response = requests.get(f"{url}/inspect/config", timeout=10)
    assert response.status_code == 200
    shown = response.json()
    assert shown["source"] == "<test config>"
    inference = shown["config"]["providers"]["inference"]
    assert [p["id"] for p in inference] == ["fake", "slow", "down"]
    assert inference[0]["config"]["api_key"] == "********"
    assert inference[0]["config"]["base_url"] == fake.base_url  # what is no secret stays readable
    assert inference[2]["config"]["base_url"] == "http://ops:********@127.0.0.1:9/v1"
    assert SECRET not in response.text and "hunter2" not in response.text


def test_openapi_lists_every_route(base_url: str) -> None:
    document = requests.get(f"{base_url}/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["version"] == __version__
    routes = requests.get(f"{base_url}/inspect/routes", timeout=10).json()["data"]
    for r in routes:
        path = r["path"].replace(":path}", "}")
        for method in set(r["methods"]) - {"HEAD"}:
            assert path in document["paths"] or r["path"] in document["paths"], path
            operations = document["paths"].get(path) or document["paths"][r["path"]]
            assert method.lower() in operations, (path, method)
    chat = document["paths"]["/v1/chat/completions"]["post"]
    ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[-1]
    schema = document["components"]["schemas"][name]
    assert {"model", "messages"} <= set(schema["required"])
    # Every $ref points at a schema that exists.
    text = requests.get(f"{base_url}/openapi.json", timeout=10).text
    import re

    for target in set(re.findall(r'"#/components/schemas/([^"]+)"', text)):
        assert target in document["components"]["schemas"], target
