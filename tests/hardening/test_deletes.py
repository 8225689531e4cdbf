"""Deletions: of concurrent deletes exactly one succeeds, and a deleted file leaves every vector store."""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter
from collections.abc import Iterator

import aiohttp
import pytest
import requests
from fake_openai import FakeOpenAI
from hardening_helpers import starter_like
from lamina.testing import serve


@pytest.fixture(scope="module")
def api(fake_server: FakeOpenAI) -> Iterator[str]:
    with serve(starter_like(fake_server)) as url:
        yield url


def delete_concurrently(url: str, times: int) -> Counter[tuple[int, bool | None]]:
    """`times` DELETEs of `url` at once: connections opened first, then the requests sent together."""

    async def all_at_once() -> list[tuple[int, bool | None]]:
        connector = aiohttp.TCPConnector(limit=times, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> tuple[int, bool | None]:
                async with session.delete(url) as response:
                    return response.status, (await response.json()).get("deleted")

            return await asyncio.gather(*(one() for _ in range(times)))

    return Counter(asyncio.run(all_at_once()))


def upload(api: str, text: str) -> str:
    files = {"file": ("notes.txt", io.BytesIO(text.encode()), "text/plain")}
    response = requests.post(f"{api}/files", files=files, data={"purpose": "assistants"})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_concurrent_deletes_of_a_vector_store(api: str) -> None:
    store = requests.post(f"{api}/vector_stores", json={"name": "doomed"}).json()
    outcome = delete_concurrently(f"{api}/vector_stores/{store['id']}", 20)
    assert outcome == Counter({(200, True): 1, (404, None): 19}), outcome


def test_concurrent_deletes_of_a_file(api: str) -> None:
    file_id = upload(api, "short-lived")
    outcome = delete_concurrently(f"{api}/files/{file_id}", 50)
    assert outcome == Counter({(200, True): 1, (404, None): 49}), outcome


def test_concurrent_detaches_of_a_store_file(api: str) -> None:
    file_id = upload(api, "attached once")
    store = requests.post(f"{api}/vector_stores", json={"file_ids": [file_id]}).json()
    outcome = delete_concurrently(f"{api}/vector_stores/{store['id']}/files/{file_id}", 20)
    assert outcome == Counter({(200, True): 1, (404, None): 19}), outcome


def wait_completed(api: str, store_id: str) -> dict[str, object]:
    for _ in range(300):
        store = requests.get(f"{api}/vector_stores/{store_id}").json()
        if store["status"] == "completed":
            return dict(store)
        time.sleep(0.1)
    raise AssertionError(f"store {store_id} never completed: {store}")


def test_a_deleted_file_leaves_every_store(api: str) -> None:
    file_id = upload(api, "zebra migration facts")
    kept = upload(api, "penguin colony facts")
    stores = [requests.post(f"{api}/vector_stores", json={"file_ids": [file_id, kept]}).json() for _ in range(2)]
    for store in stores:
        assert wait_completed(api, store["id"])["file_counts"]["completed"] == 2
        hits = requests.post(f"{api}/vector_stores/{store['id']}/search", json={"query": "zebra migration facts"})
        assert file_id in {hit["file_id"] for hit in hits.json()["data"]}
    assert requests.delete(f"{api}/files/{file_id}").json()["deleted"] is True
    for store in stores:
        view = requests.get(f"{api}/vector_stores/{store['id']}").json()
        assert view["file_counts"]["completed"] == 1 and view["file_counts"]["total"] == 1, view
        hits = requests.post(f"{api}/vector_stores/{store['id']}/search", json={"query": "zebra migration facts"})
        assert hits.status_code == 200
        assert file_id not in {hit["file_id"] for hit in hits.json()["data"]}
        listed = requests.get(f"{api}/vector_stores/{store['id']}/files").json()["data"]
        assert [f["id"] for f in listed] == [kept]
