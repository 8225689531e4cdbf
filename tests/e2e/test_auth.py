"""Authentication, ownership, access policies, quotas and usage, over HTTP against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
import yaml
from auth_helpers import make_key, stack_config
from e2e_helpers import assert_openai_error
from fake_openai import CHAT_MODEL, FakeOpenAI
from lamina.keys import key_hash, keys_registry, revoke_key
from lamina.storage.sqlite import SQLiteStorageConfig, open_storage
from lamina.testing import serve
from openai import OpenAI

CHAT = f"fake/{CHAT_MODEL}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(url: str, key: str, content: bytes = b"secret notes") -> str:
    files = {"file": ("notes.txt", content)}
    response = requests.post(f"{url}/files", files=files, data={"purpose": "assistants"}, headers=bearer(key))
    assert response.status_code == 200, response.text
    file_id: str = response.json()["id"]
    return file_id


def chat(url: str, key: str) -> requests.Response:
    body = {"model": CHAT, "messages": [{"role": "user", "content": "hello there"}]}
    return requests.post(f"{url}/chat/completions", json=body, headers=bearer(key), timeout=10)


def test_requests_without_a_valid_key_get_401_and_health_stays_open(fake: FakeOpenAI, tmp_path: Path) -> None:
    with serve(stack_config(fake, tmp_path)) as url:
        assert requests.get(f"{url}/health", timeout=5).json() == {"status": "OK"}
        missing = requests.get(f"{url}/models", timeout=5)
        assert_openai_error(missing, 401, code="missing_api_key")
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_openai_error(
            requests.get(f"{url}/files", headers=bearer("lmn-nope"), timeout=5), 401, code="invalid_api_key"
        )
        assert_openai_error(requests.get(f"{url}/files", headers={"Authorization": "Basic eDp5"}, timeout=5), 401)
        for path in ("/providers", "/openapi.json"):
            assert requests.get(url + path, timeout=5).status_code == 401
        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=url, api_key="sk-wrong", max_retries=0).models.list()
        key = make_key(tmp_path, "alice")
        assert {m.id for m in OpenAI(base_url=url, api_key=key, max_retries=0).models.list()} >= {"embed", CHAT}


def test_bob_neither_reads_nor_deletes_alices_files(fake: FakeOpenAI, tmp_path: Path) -> None:
    with serve(stack_config(fake, tmp_path)) as url:
        alice, bob = make_key(tmp_path, "alice"), make_key(tmp_path, "bob")
        file_id = upload(url, alice)
        for method, path in [("GET", ""), ("GET", "/content"), ("DELETE", "")]:
            response = requests.request(method, f"{url}/files/{file_id}{path}", headers=bearer(bob), timeout=5)
            assert_openai_error(response, 404)
        assert requests.get(f"{url}/files", headers=bearer(bob), timeout=5).json()["data"] == []
        assert_openai_error(requests.get(f"{url}/files?after={file_id}", headers=bearer(bob), timeout=5), 404)
        bobs_client = OpenAI(base_url=url, api_key=bob, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            bobs_client.vector_stores.create(name="steal", file_ids=[file_id])
        assert (
            requests.get(f"{url}/files/{file_id}/content", headers=bearer(alice), timeout=5).content == b"secret notes"
        )
        # A second key of alice's is alice: it sees her files.
        again = make_key(tmp_path, "alice")
        assert [f["id"] for f in requests.get(f"{url}/files", headers=bearer(again), timeout=5).json()["data"]] == [
            file_id
        ]


def test_expired_and_revoked_keys_are_refused(fake: FakeOpenAI, tmp_path: Path) -> None:
    with serve(stack_config(fake, tmp_path)) as url:
        expired = make_key(tmp_path, "alice", expires_in=-1)
        assert_openai_error(requests.get(f"{url}/models", headers=bearer(expired), timeout=5), 401)
        later = make_key(tmp_path, "alice", expires_in=3600)
        assert requests.get(f"{url}/models", headers=bearer(later), timeout=5).status_code == 200

        async def revoke() -> None:
            storage = await open_storage(SQLiteStorageConfig(), tmp_path)
            try:
                record = await keys_registry(storage.kv).get(key_hash(later))
                assert record is not None
                await revoke_key(storage.kv, record.id)
            finally:
                await storage.close()

        asyncio.run(revoke())
        assert_openai_error(requests.get(f"{url}/models", headers=bearer(later), timeout=5), 401)


def test_scopes_limit_a_key_to_some_apis(fake: FakeOpenAI, tmp_path: Path) -> None:
    with serve(stack_config(fake, tmp_path)) as url:
        files_only = make_key(tmp_path, "alice", scopes=["files"])
        upload(url, files_only)
        assert_openai_error(chat(url, files_only), 403, code="permission_denied")
        assert_openai_error(requests.get(f"{url}/shields", headers=bearer(files_only), timeout=5), 403)
        # Scopes hold under Llama Stack's other prefixes too: /v1alpha (rerank), /v1beta (connectors).
        root = url.removesuffix("/v1")
        rerank = requests.post(f"{root}/v1alpha/inference/rerank", json={}, headers=bearer(files_only), timeout=5)
        assert_openai_error(rerank, 403, message_contains="rerank")
        connectors = requests.get(f"{root}/v1beta/connectors", headers=bearer(files_only), timeout=5)
        assert_openai_error(connectors, 403, message_contains="tool_runtime")
        processed = requests.post(
            f"{root}/v1alpha/file-processors/process", json={}, headers=bearer(files_only), timeout=5
        )
        assert_openai_error(processed, 403, message_contains="file_processors")
        usage = "/".join([url.removesuffix("/v1"), "v1alpha/admin/usage"])
        assert_openai_error(requests.get(usage, headers=bearer(files_only), timeout=5), 403)
        admin = make_key(tmp_path, "root", scopes=["admin", "inference"])
        assert requests.get(usage, headers=bearer(admin), timeout=5).status_code == 200
        assert chat(url, admin).status_code == 200


POLICY = [
    {"forbid": {"actions": ["delete"], "resource": "file::*"}, "unless": "user with admin in roles"},
    {"permit": {"actions": ["create", "read", "update", "delete"]}, "when": "user is owner"},
    {"permit": {"actions": ["read"]}, "when": ["user in owners teams"]},
    {"permit": {"actions": ["read"]}, "when": "resource is unowned"},
]


def test_an_access_policy_widens_and_narrows_ownership(fake: FakeOpenAI, tmp_path: Path) -> None:
    config = stack_config(
        fake,
        tmp_path,
        providers=[{"id": "keys", "type": "api_keys", "config": {"cache_seconds": 0}}],
        access_policy=POLICY,
    )
    with serve(config) as url:
        alice = make_key(tmp_path, "alice", attributes={"teams": ["ml"]})
        carol = make_key(tmp_path, "carol", attributes={"teams": ["ml", "web"]})
        bob = make_key(tmp_path, "bob", attributes={"teams": ["web"]})
        erin = make_key(tmp_path, "erin", attributes={"teams": ["ml"], "roles": ["admin"]})
        file_id = upload(url, alice)
        assert requests.get(f"{url}/files/{file_id}", headers=bearer(carol), timeout=5).status_code == 200
        assert_openai_error(requests.get(f"{url}/files/{file_id}", headers=bearer(bob), timeout=5), 404)
        # Carol may read alice's file through the team, but not delete it; alice may not delete files at all.
        assert_openai_error(requests.delete(f"{url}/files/{file_id}", headers=bearer(carol), timeout=5), 403)
        assert_openai_error(requests.delete(f"{url}/files/{file_id}", headers=bearer(alice), timeout=5), 403)
        assert (
            requests.delete(f"{url}/files/{file_id}", headers=bearer(erin), timeout=5).status_code == 403
        )  # read-only
        erins = upload(url, erin)
        assert requests.delete(f"{url}/files/{erins}", headers=bearer(erin), timeout=5).json()["deleted"] is True
        # Configured shields are unowned: everyone reads them.
        assert [s["id"] for s in requests.get(f"{url}/shields", headers=bearer(bob), timeout=5).json()["data"]] == [
            "rules"
        ]


def test_a_bad_policy_is_a_config_error(fake: FakeOpenAI, tmp_path: Path) -> None:
    from lamina.config import ConfigError

    bad = stack_config(fake, tmp_path, access_policy=[{"permit": {"actions": ["read"]}, "when": "user is king"}])
    with pytest.raises(ConfigError, match="user is king"), serve(bad):
        pass
    unknown = stack_config(fake, tmp_path, providers=[{"id": "x", "type": "kerberos"}])
    with pytest.raises(ConfigError, match="kerberos"), serve(unknown):
        pass


def limited_until_429(url: str, key: str, most: int) -> requests.Response:
    for _ in range(most):
        response = chat(url, key)
        if response.status_code == 429:
            return response
        assert response.status_code == 200, response.text
    raise AssertionError(f"no 429 in {most} requests")


def test_rate_limits_answer_429_with_retry_after(fake: FakeOpenAI, tmp_path: Path) -> None:
    quotas = {"users": {"tokens": {"tokens_per_minute": 5}}, "teams": {"small": {"token_budget": 3}}}
    with serve(stack_config(fake, tmp_path, quotas=quotas)) as url:
        key = make_key(tmp_path, "alice", limits={"requests_per_minute": 2})
        # Two a minute: the third is refused (within five, should a minute end between two requests).
        refused = limited_until_429(url, key, 5)
        assert_openai_error(refused, 429, type="requests", code="rate_limit_exceeded")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        with pytest.raises(openai.RateLimitError):
            OpenAI(base_url=url, api_key=key, max_retries=0).models.list()
        # Tokens: the request that crosses the limit completes, the next is refused.
        tokens = make_key(tmp_path, "tokens")
        refused = limited_until_429(url, tokens, 4)
        assert_openai_error(refused, 429, type="tokens", code="rate_limit_exceeded")
        assert "retry-after" in refused.headers
        budget = make_key(tmp_path, "someone", attributes={"teams": ["small"]})
        assert chat(url, budget).status_code == 200
        assert_openai_error(chat(url, budget), 429, type="insufficient_quota", code="insufficient_quota")
        # Others are not limited.
        assert chat(url, make_key(tmp_path, "bob")).status_code == 200


def test_rate_limits_kept_in_redis(fake: FakeOpenAI, tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"lamina-test-{secrets.token_hex(6)}:"
    quotas = {"redis_url": "redis://127.0.0.1:6379/0", "redis_prefix": prefix, "default": {"requests_per_minute": 2}}
    try:
        key = make_key(tmp_path, "alice")
        # Two servers sharing Redis share the limit.
        with (
            serve(stack_config(fake, tmp_path, quotas=quotas)) as one,
            serve(stack_config(fake, tmp_path, quotas=quotas)) as two,
        ):
            statuses = [chat(url, key).status_code for url in (one, two, one, two, one)]
            assert 429 in statuses[2:], statuses
            refused = chat(one, key) if statuses[-1] != 429 else None
            assert any(client.scan_iter(match=f"{prefix}user:alice:r:m:*"))
            if refused is not None and refused.status_code == 429:
                assert int(refused.headers["retry-after"]) >= 1
    finally:
        stale = list(client.scan_iter(match=f"{prefix}*"))
        if stale:
            client.delete(*stale)
        client.close()


def test_usage_per_key_and_model(fake: FakeOpenAI, tmp_path: Path) -> None:
    config = stack_config(fake, tmp_path)
    with serve(config) as url:
        key = make_key(tmp_path, "alice")
        admin = make_key(tmp_path, "root", attributes={"roles": ["admin"]})
        for _ in range(2):
            assert chat(url, key).status_code == 200
        client = OpenAI(base_url=url, api_key=key, max_retries=0)
        stream = client.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": "one two"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        usage_url = url.removesuffix("/v1") + "/v1alpha/admin/usage"
        rows = requests.get(usage_url, headers=bearer(admin), timeout=5).json()["data"]
        (row,) = [r for r in rows if r["principal"] == "alice" and r["model"] == CHAT]
        assert row["requests"] == 3 and row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
        assert row["key_id"].startswith("key_")
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(config))
    shown = lamina("usage", "--json", "--config", str(run_yaml))
    (cli_row,) = [r for r in json.loads(shown.stdout) if r["principal"] == "alice" and r["model"] == CHAT]
    assert cli_row["requests"] == 3 and cli_row["prompt_tokens"] == row["prompt_tokens"]


def lamina(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from lamina.cli import main; main()", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    return result


def test_lamina_keys_create_list_revoke(fake: FakeOpenAI, tmp_path: Path) -> None:
    config: dict[str, Any] = stack_config(fake, tmp_path)
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(config))
    created = lamina(
        "keys", "create", "alice", "--attr", "teams=ml,web", "--attr", "roles=admin", "--config", str(run_yaml)
    )
    key = created.stdout.splitlines()[-1]
    assert key.startswith("lmn-") and key not in created.stderr
    listed = json.loads(lamina("keys", "list", "--json", "--config", str(run_yaml)).stdout)
    (record,) = listed
    assert record["name"] == "alice" and record["status"] == "active" and "hash" not in record
    assert record["attributes"] == {"teams": ["ml", "web"], "roles": ["admin"]}
    assert key not in json.dumps(listed)
    with serve(run_yaml) as url:
        assert requests.get(f"{url}/files", headers=bearer(key), timeout=5).status_code == 200
        lamina("keys", "revoke", record["id"], "--config", str(run_yaml))
        assert_openai_error(requests.get(f"{url}/files", headers=bearer(key), timeout=5), 401)
    assert json.loads(lamina("keys", "list", "--json", "--config", str(run_yaml)).stdout)[0]["status"] == "revoked"


def test_lamina_auth_turns_api_keys_on_in_the_starter_distro(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.cli import find_run_config
    from lamina.config import load

    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    for name in [n for n in os.environ if n.startswith(("OPENAI_", "VLLM_", "OLLAMA_", "LLAMACPP_", "EMBEDDING_"))]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("LAMINA_AUTH", raising=False)
    assert load(find_run_config("starter")).auth.providers == []  # off unless asked for
    monkeypatch.setenv("LAMINA_AUTH", "api_keys")
    key = lamina("keys", "create", "alice").stdout.splitlines()[-1]  # the starter's storage under LAMINA_HOME
    config = load(find_run_config("starter"))
    assert config.data_dir() == tmp_path / "starter"
    config.storage.dir = str(config.data_dir())  # `serve` would use a temporary folder
    with serve(config) as url:
        assert_openai_error(requests.get(f"{url}/files", timeout=5), 401)
        assert requests.get(f"{url}/files", headers=bearer(key), timeout=5).status_code == 200


def test_stored_completions_prompts_and_batches_belong_to_their_caller(fake: FakeOpenAI, tmp_path: Path) -> None:
    import time

    with serve(stack_config(fake, tmp_path)) as url:
        alice, bob = make_key(tmp_path, "alice"), make_key(tmp_path, "bob")
        body = {"model": CHAT, "messages": [{"role": "user", "content": "remember me"}], "store": True}
        stored = requests.post(f"{url}/chat/completions", json=body, headers=bearer(alice), timeout=10).json()["id"]
        assert requests.get(f"{url}/chat/completions/{stored}", headers=bearer(alice), timeout=5).status_code == 200
        assert_openai_error(requests.get(f"{url}/chat/completions/{stored}", headers=bearer(bob), timeout=5), 404)
        assert_openai_error(requests.delete(f"{url}/chat/completions/{stored}", headers=bearer(bob), timeout=5), 404)
        assert requests.get(f"{url}/chat/completions", headers=bearer(bob), timeout=5).json()["data"] == []
        prompt = requests.post(
            f"{url}/prompts", json={"prompt": "Hi {{name}}", "variables": ["name"]}, headers=bearer(alice), timeout=5
        )
        prompt_id = prompt.json()["prompt_id"]
        assert requests.get(f"{url}/prompts/{prompt_id}", headers=bearer(alice), timeout=5).status_code == 200
        assert_openai_error(requests.get(f"{url}/prompts/{prompt_id}", headers=bearer(bob), timeout=5), 404)
        assert requests.get(f"{url}/prompts", headers=bearer(bob), timeout=5).json()["data"] == []

        line = {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {**body, "store": True}}
        sent = {"file": ("batch.jsonl", (json.dumps(line) + "\n").encode())}
        input_id = requests.post(
            f"{url}/files", files=sent, data={"purpose": "batch"}, headers=bearer(alice), timeout=10
        ).json()["id"]
        create = {"input_file_id": input_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        assert_openai_error(requests.post(f"{url}/batches", json=create, headers=bearer(bob), timeout=10), 404)
        batch = requests.post(f"{url}/batches", json=create, headers=bearer(alice), timeout=10).json()
        deadline = time.monotonic() + 60
        while batch["status"] not in ("completed", "failed", "expired", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.2)
            batch = requests.get(f"{url}/batches/{batch['id']}", headers=bearer(alice), timeout=5).json()
        assert batch["status"] == "completed", batch
        assert_openai_error(requests.get(f"{url}/batches/{batch['id']}", headers=bearer(bob), timeout=5), 404)
        assert requests.get(f"{url}/batches", headers=bearer(bob), timeout=5).json()["data"] == []
        # The batch ran as alice: its output file and the completion its line stored are hers.
        output = batch["output_file_id"]
        assert requests.get(f"{url}/files/{output}/content", headers=bearer(alice), timeout=5).status_code == 200
        assert_openai_error(requests.get(f"{url}/files/{output}/content", headers=bearer(bob), timeout=5), 404)
        listed = requests.get(f"{url}/chat/completions", headers=bearer(alice), timeout=5).json()["data"]
        assert len(listed) == 2
        assert requests.get(f"{url}/chat/completions", headers=bearer(bob), timeout=5).json()["data"] == []


def test_responses_conversations_tool_groups_and_connectors_belong_to_their_caller(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    config = stack_config(fake, tmp_path)
    config["providers"]["responses"] = [{"id": "responses", "type": "inline::responses", "config": {}}]
    config["providers"]["tool_runtime"] = [{"id": "mcp", "type": "remote::model-context-protocol", "config": {}}]
    with serve(config) as url:
        alice, bob = make_key(tmp_path, "alice"), make_key(tmp_path, "bob")
        alices = OpenAI(base_url=url, api_key=alice, max_retries=0)
        bobs = OpenAI(base_url=url, api_key=bob, max_retries=0)

        conversation = alices.conversations.create(metadata={"topic": "private"})
        response = alices.responses.create(model=CHAT, input="remember me", conversation=conversation.id)
        assert alices.responses.retrieve(response.id).id == response.id
        for call in (
            lambda: bobs.responses.retrieve(response.id),
            lambda: bobs.responses.delete(response.id),
            lambda: bobs.responses.input_items.list(response.id),
            lambda: bobs.responses.create(model=CHAT, input="and me?", previous_response_id=response.id),
            lambda: bobs.conversations.retrieve(conversation.id),
            lambda: bobs.conversations.items.list(conversation.id),
            lambda: bobs.conversations.delete(conversation.id),
            lambda: bobs.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}]),
            lambda: bobs.responses.create(model=CHAT, input="join", conversation=conversation.id),
        ):
            with pytest.raises(openai.NotFoundError):
                call()
        assert requests.get(f"{url}/responses", headers=bearer(bob), timeout=5).json()["data"] == []
        assert [r["id"] for r in requests.get(f"{url}/responses", headers=bearer(alice), timeout=5).json()["data"]] == [
            response.id
        ]
        assert len(alices.conversations.items.list(conversation.id).data) == 2  # the input and the answer

        root = url.removesuffix("/v1")
        group = {
            "toolgroup_id": "alices-tools",
            "provider_id": "mcp",
            "mcp_endpoint": {"uri": "http://127.0.0.1:9/mcp"},
        }
        assert requests.post(f"{url}/toolgroups", json=group, headers=bearer(alice), timeout=5).status_code == 200
        connector = {"connector_id": "alices-server", "url": "http://127.0.0.1:9/mcp", "headers": {"X-Token": "t"}}
        made = requests.post(f"{root}/v1beta/connectors", json=connector, headers=bearer(alice), timeout=5)
        assert made.status_code == 200, made.text
        assert requests.get(f"{url}/toolgroups/alices-tools", headers=bearer(alice), timeout=5).ok
        for path in ("/v1/toolgroups/alices-tools", "/v1beta/connectors/alices-server"):
            assert_openai_error(requests.get(root + path, headers=bearer(bob), timeout=5), 404)
            assert_openai_error(requests.delete(root + path, headers=bearer(bob), timeout=5), 404)

        def ids(path: str, key: str, field: str) -> list[str]:
            return [item[field] for item in requests.get(root + path, headers=bearer(key), timeout=5).json()["data"]]

        assert "alices-tools" in ids("/v1/toolgroups", alice, "identifier")
        assert "alices-tools" not in ids("/v1/toolgroups", bob, "identifier")
        assert "alices-server" in ids("/v1beta/connectors", alice, "connector_id")
        assert "alices-server" not in ids("/v1beta/connectors", bob, "connector_id")
