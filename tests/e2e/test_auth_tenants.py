"""Two tenants, each with its own API key, run random operations over every API against one server: neither ever
reads, lists, searches, changes or deletes an object of the other's."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from auth_helpers import make_key, stack_config
from fake_openai import CHAT_MODEL, FakeOpenAI
from lamina.testing import serve

KINDS = ("file", "store", "model", "shield")


class Tenant:
    def __init__(self, name: str, key: str, url: str) -> None:
        self.name, self.url = name, url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        self.owned: dict[str, list[str]] = {kind: [] for kind in KINDS}

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=30, **kwargs)


def test_two_tenants_never_see_each_others_objects(fake: FakeOpenAI, tmp_path: Path) -> None:
    rng = random.Random(12)
    with serve(stack_config(fake, tmp_path)) as url:
        tenants = [Tenant(name, make_key(tmp_path, name), url) for name in ("alice", "bob")]
        checks = {"denied": 0, "own": 0, "lists": 0}

        def other(tenant: Tenant) -> Tenant:
            return tenants[1] if tenant is tenants[0] else tenants[0]

        def pick(tenant: Tenant, kind: str) -> tuple[str, bool] | None:
            """An object of `kind`, the tenant's own or the other's (then it must be invisible)."""
            mine, theirs = tenant.owned[kind], other(tenant).owned[kind]
            pool = [(i, True) for i in mine] + [(i, False) for i in theirs]
            return rng.choice(pool) if pool else None

        def expect(response: requests.Response, own: bool, ok: int = 200) -> None:
            if own:
                assert response.status_code == ok, response.text
                checks["own"] += 1
            else:
                # Someone else's object does not exist for this caller: a 404, never its content.
                assert response.status_code == 404, response.text
                checks["denied"] += 1

        def upload(t: Tenant) -> None:
            sent = {"file": (f"{t.name}.txt", f"{t.name} writes about glaciers {secrets.token_hex(4)}".encode())}
            response = t.call("POST", "/files", files=sent, data={"purpose": "assistants"})
            assert response.status_code == 200, response.text
            t.owned["file"].append(response.json()["id"])

        def read_file(t: Tenant) -> None:
            if (chosen := pick(t, "file")) is not None:
                file_id, own = chosen
                expect(t.call("GET", f"/files/{file_id}"), own)
                response = t.call("GET", f"/files/{file_id}/content")
                expect(response, own)
                if own:
                    assert t.name.encode() in response.content

        def delete_file(t: Tenant) -> None:
            if (chosen := pick(t, "file")) is not None:
                file_id, own = chosen
                expect(t.call("DELETE", f"/files/{file_id}"), own)
                if own:
                    t.owned["file"].remove(file_id)

        def create_store(t: Tenant) -> None:
            files = t.owned["file"][-1:]
            response = t.call("POST", "/vector_stores", json={"name": t.name, "file_ids": files})
            assert response.status_code == 200, response.text
            t.owned["store"].append(response.json()["id"])

        def use_store(t: Tenant) -> None:
            if (chosen := pick(t, "store")) is None:
                return
            store_id, own = chosen
            expect(t.call("GET", f"/vector_stores/{store_id}"), own)
            search = t.call("POST", f"/vector_stores/{store_id}/search", json={"query": "glaciers"})
            expect(search, own)
            if own:  # only this tenant's files can be in its store
                assert {hit["file_id"] for hit in search.json()["data"]} <= set(t.owned["file"]) | {""}
            expect(t.call("GET", f"/vector_stores/{store_id}/files"), own)
            query = {"vector_store_id": store_id, "query": "glaciers"}
            expect(t.call("POST", "/vector-io/query", json=query), own)
            expect(t.call("POST", f"/vector_stores/{store_id}", json={"metadata": {"by": t.name}}), own)

        def attach(t: Tenant) -> None:
            store, file = pick(t, "store"), pick(t, "file")
            if store is not None and file is not None:
                response = t.call("POST", f"/vector_stores/{store[0]}/files", json={"file_id": file[0]})
                expect(response, store[1] and file[1])

        def delete_store(t: Tenant) -> None:
            if (chosen := pick(t, "store")) is not None:
                store_id, own = chosen
                expect(t.call("DELETE", f"/vector_stores/{store_id}"), own)
                if own:
                    t.owned["store"].remove(store_id)

        def register_model(t: Tenant) -> None:
            model_id = f"{t.name}-{secrets.token_hex(3)}"
            body = {"id": model_id, "provider_id": "fake", "provider_model_id": CHAT_MODEL}
            assert t.call("POST", "/models", json=body).status_code == 200
            t.owned["model"].append(model_id)

        def use_model(t: Tenant) -> None:
            if (chosen := pick(t, "model")) is None:
                return
            model_id, own = chosen
            expect(t.call("GET", f"/models/{model_id}"), own)
            chat = {"model": model_id, "messages": [{"role": "user", "content": "hi"}]}
            expect(t.call("POST", "/chat/completions", json=chat), own)

        def delete_model(t: Tenant) -> None:
            if (chosen := pick(t, "model")) is not None:
                model_id, own = chosen
                expect(t.call("DELETE", f"/models/{model_id}"), own)
                if own:
                    t.owned["model"].remove(model_id)

        def register_shield(t: Tenant) -> None:
            shield_id = f"{t.name}-shield-{secrets.token_hex(3)}"
            body = {"id": shield_id, "provider_id": "rules", "params": {"blocked_words": ["zebra"]}}
            response = t.call("POST", "/shields", json=body)
            assert response.status_code == 200, response.text
            t.owned["shield"].append(shield_id)

        def use_shield(t: Tenant) -> None:
            if (chosen := pick(t, "shield")) is None:
                return
            shield_id, own = chosen
            expect(t.call("GET", f"/shields/{shield_id}"), own)
            run = {"shield_id": shield_id, "messages": [{"role": "user", "content": "a zebra"}]}
            expect(t.call("POST", "/safety/run-shield", json=run), own)
            expect(t.call("POST", "/moderations", json={"model": shield_id, "input": "a zebra"}), own)

        def delete_shield(t: Tenant) -> None:
            if (chosen := pick(t, "shield")) is not None:
                shield_id, own = chosen
                expect(t.call("DELETE", f"/shields/{shield_id}"), own)
                if own:
                    t.owned["shield"].remove(shield_id)

        def chat(t: Tenant) -> None:
            body = {"model": f"fake/{CHAT_MODEL}", "messages": [{"role": "user", "content": "hello"}]}
            assert t.call("POST", "/chat/completions", json=body).status_code == 200

        def lists(t: Tenant) -> None:
            theirs = other(t).owned
            listed = {
                "file": [f["id"] for f in t.call("GET", "/files").json()["data"]],
                "store": [s["id"] for s in t.call("GET", "/vector_stores").json()["data"]],
                "model": [m["id"] for m in t.call("GET", "/models").json()["data"]],
                "shield": [s["id"] for s in t.call("GET", "/shields").json()["data"]],
            }
            for kind, ids in listed.items():
                assert not set(ids) & set(theirs[kind]), (kind, ids)
                assert set(t.owned[kind]) <= set(ids), (kind, ids, t.owned[kind])
            checks["lists"] += 1

        operations: list[Callable[[Tenant], None]] = [
            upload, upload, read_file, delete_file, create_store, use_store, use_store, attach, delete_store,
            register_model, use_model, delete_model, register_shield, use_shield, delete_shield, chat, lists,
        ]  # fmt: skip
        for _ in range(160):
            rng.choice(operations)(rng.choice(tenants))
        for tenant in tenants:
            lists(tenant)
        assert checks["denied"] >= 30 and checks["own"] >= 25 and checks["lists"] >= 5, checks
