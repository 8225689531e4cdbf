"""The storage contract (`lamina.storage`: KVStore and JobQueue), run against every backend: core's SQLite file
and the postgres backend on a real PostgreSQL. "Two processes" are two storages opened on the same database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lamina.storage import Storage
from lamina.storage.sqlite import SQLiteStorageConfig
from lamina.storage.sqlite import open_storage as open_sqlite
from lamina_storage_postgres import PostgresStorageConfig
from lamina_storage_postgres import open_storage as open_postgres
from pydantic import BaseModel

Opener = Callable[[], Awaitable[Storage]]


@pytest.fixture(params=["sqlite", "postgres"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens another storage on the same backing database each time it is called; closes them all at the end."""
    opened: list[Storage] = []
    if request.param == "sqlite":

        async def open_one() -> Storage:
            opened.append(await open_sqlite(SQLiteStorageConfig(), tmp_path))
            return opened[-1]

    else:
        # One database for the module (creating one takes a second), emptied before each test.
        url = request.getfixturevalue("module_postgres_url")

        async def open_one() -> Storage:
            opened.append(await open_postgres(PostgresStorageConfig(url=url, max_connections=4), tmp_path))
            return opened[-1]

        first = await open_one()
        await first.pool.execute("TRUNCATE lamina_kv, lamina_jobs")  # type: ignore[attr-defined]

    yield open_one
    for storage in opened:
        await storage.close()


async def test_values_round_trip_exactly(opener: Opener) -> None:
    kv = (await opener()).kv
    value = {"z": 1, "a": [1.5, None, True, "é\u0000x"], "nested": {"b": 2, "a": 1}, "big": 2**62}
    await kv.set("models/one", value)
    assert await kv.get("models/one") == value
    assert list((await kv.get("models/one"))["nested"]) == ["b", "a"]  # key order kept
    assert await kv.get("models/none") is None
    await kv.set("models/one", "replaced")
    assert await kv.get("models/one") == "replaced"


class Record(BaseModel):
    name: str
    when: datetime
    extra: dict[str, Any]


async def test_a_pydantic_value_is_stored_as_its_json(opener: Opener) -> None:
    kv = (await opener()).kv
    record = Record(name="é\u0000", when=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), extra={"z": [1.5, None], "a": 2})
    await kv.set("records/one", record)
    assert await kv.get("records/one") == record.model_dump(mode="json")
    assert Record.model_validate(await kv.get("records/one")) == record


async def test_values_by_prefix_in_key_order(opener: Opener) -> None:
    kv = (await opener()).kv
    for key in ["files/b", "files/a", "files/Z", "files/é", "filesx", "file", "vector_stores/a"]:
        await kv.set(key, key)
    # Code-point order, as SQLite's binary collation: "Z" < "a" < "b" < "é"; "filesx" is not under "files/".
    assert await kv.values("files/") == ["files/Z", "files/a", "files/b", "files/é"]
    assert await kv.values("nothing/") == []
    assert await kv.delete("files/a") is True
    assert await kv.delete("files/a") is False
    assert await kv.values("files/") == ["files/Z", "files/b", "files/é"]


async def test_a_second_process_sees_writes(opener: Opener) -> None:
    first, second = await opener(), await opener()
    await first.kv.set("shared/x", {"n": 1})
    assert await second.kv.get("shared/x") == {"n": 1}
    await first.jobs.enqueue("ingest", "f1", {"file": 1})
    job = await second.jobs.claim("ingest", "w2", 60)
    assert job is not None and job.payload == {"file": 1} and job.attempts == 1


async def test_a_job_is_leased_renewed_and_finished(opener: Opener) -> None:
    jobs = (await opener()).jobs
    queued = await jobs.enqueue("ingest", "k", {"p": 1})
    assert await jobs.count("ingest") == 1 and await jobs.count("other") == 0
    job = await jobs.claim("ingest", "w1", 60)
    assert job is not None and (job.id, job.key, job.attempts) == (queued.id, "k", 1)
    assert await jobs.claim("ingest", "w2", 60) is None  # leased
    assert await jobs.claim("other", "w2", 60) is None
    assert await jobs.renew(job, "w1", 60) is True
    assert await jobs.renew(job, "w2", 60) is False
    assert await jobs.finish(job, "w2") is False
    assert await jobs.finish(job, "w1") is True
    assert await jobs.count("ingest") == 0
    assert await jobs.finish(job, "w1") is False


async def test_an_expired_lease_is_handed_out_again(opener: Opener) -> None:
    jobs = (await opener()).jobs
    await jobs.enqueue("ingest", "k", {})
    dead = await jobs.claim("ingest", "w1", -1)  # a lease that has already expired: its worker died
    assert dead is not None
    taken = await jobs.claim("ingest", "w2", 60)
    assert taken is not None and taken.id == dead.id and taken.attempts == 2
    assert await jobs.renew(dead, "w1", 60) is False  # the dead worker has lost it
    assert await jobs.finish(dead, "w1") is False
    assert await jobs.finish(taken, "w2") is True


async def test_enqueue_supersedes_and_ensure_does_not(opener: Opener) -> None:
    jobs = (await opener()).jobs
    assert await jobs.ensure("ingest", "k", {"v": 1}) is True
    assert await jobs.ensure("ingest", "k", {"v": 2}) is False
    running = await jobs.claim("ingest", "w1", 60)
    assert running is not None and running.payload == {"v": 1}
    assert await jobs.ensure("ingest", "k", {"v": 3}) is False  # running counts
    again = await jobs.enqueue("ingest", "k", {"v": 4})
    assert again.id != running.id
    assert await jobs.renew(running, "w1", 60) is False  # superseded
    assert await jobs.finish(running, "w1") is False
    fresh = await jobs.claim("ingest", "w2", 60)
    assert fresh is not None and (fresh.id, fresh.payload, fresh.attempts) == (again.id, {"v": 4}, 1)
    assert await jobs.cancel("ingest", "k") is True
    assert await jobs.cancel("ingest", "k") is False
    assert await jobs.renew(fresh, "w2", 60) is False


async def test_release_gives_a_job_back_uncounted(opener: Opener) -> None:
    jobs = (await opener()).jobs
    await jobs.enqueue("ingest", "k", {})
    job = await jobs.claim("ingest", "w1", 60)
    assert job is not None
    assert await jobs.release(job, "w2") is False
    assert await jobs.release(job, "w1") is True
    again = await jobs.claim("ingest", "w2", 60)
    assert again is not None and again.id == job.id and again.attempts == 1


async def test_jobs_are_claimed_in_queue_order(opener: Opener) -> None:
    jobs = (await opener()).jobs
    for key in ["a", "b", "c"]:
        await jobs.enqueue("ingest", key, {})
    await jobs.enqueue("ingest", "a", {"again": True})  # re-queued: now behind the others
    claimed = [await jobs.claim("ingest", "w", 60) for _ in range(4)]
    assert [job.key for job in claimed if job] == ["b", "c", "a"] and claimed[3] is None


async def test_concurrent_claimers_never_share_a_job(opener: Opener) -> None:
    storages = [await opener(), await opener()]
    for n in range(30):
        await storages[0].jobs.enqueue("ingest", f"k{n}", {"n": n})

    async def drain(storage: Storage, worker: str) -> list[str]:
        taken = []
        while (job := await storage.jobs.claim("ingest", worker, 60)) is not None:
            taken.append(job.key)
        return taken

    results = await asyncio.gather(*(drain(storages[i % 2], f"w{i}") for i in range(6)))
    everything = [key for taken in results for key in taken]
    assert sorted(everything) == sorted(f"k{n}" for n in range(30))  # each once, none twice
