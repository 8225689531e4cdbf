"""lamina_redis.Shared against the real Redis at 127.0.0.1:6379: two "replicas" (two clients) share counters and
broadcasts; every key the test made is deleted at the end; an unreachable Redis is a 503 naming it."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from lamina.errors import StorageUnavailable
from lamina_redis import Shared

REDIS_URL = os.environ.get("LAMINA_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest_asyncio.fixture
async def replicas() -> AsyncIterator[tuple[Shared, Shared]]:
    prefix = f"lamina_test_{secrets.token_hex(6)}:"
    first, second = Shared.connect(REDIS_URL, prefix), Shared.connect(REDIS_URL, prefix)
    try:
        await first.client.ping()
    except Exception as exc:
        await first.close()
        await second.close()
        reason = f"no Redis at {REDIS_URL} ({type(exc).__name__}); Redis tests skipped"
        if os.environ.get("LAMINA_REQUIRE_SERVICES"):
            pytest.fail(f"{reason} (LAMINA_REQUIRE_SERVICES is set)")
        pytest.skip(reason)
    yield first, second
    keys = [key async for key in first.client.scan_iter(match=prefix + "*")]
    if keys:
        await first.client.delete(*keys)
    await first.close()
    await second.close()


async def test_counters_are_shared(replicas: tuple[Shared, Shared]) -> None:
    first, second = replicas
    assert await first.get("hits") == 0
    await asyncio.gather(*(replica.incr("hits") for replica in (first, second) for _ in range(50)))
    assert await first.get("hits") == await second.get("hits") == 100
    assert await second.incr("hits", 5) == 105
    await first.reset("hits")
    assert await second.get("hits") == 0
    await first.incr("window", ttl_seconds=60)
    ttl = await first.client.pttl(first.prefix + "window")
    assert 0 < ttl <= 60_000
    await second.incr("window", ttl_seconds=1)  # an existing counter keeps its expiry
    assert await first.client.pttl(first.prefix + "window") > 1000


async def test_broadcasts_reach_other_replicas(replicas: tuple[Shared, Shared]) -> None:
    first, second = replicas
    received: list[object] = []
    subscribed = asyncio.Event()

    async def listen() -> None:
        messages = second.subscribe("cancel")
        waiting = asyncio.ensure_future(anext(messages))
        # Published messages reach only current subscribers: wait until Redis counts this one.
        while (await first.client.pubsub_numsub(first.prefix + "cancel"))[0][1] < 1:
            await asyncio.sleep(0.01)
        subscribed.set()
        received.append(await waiting)
        received.append(await anext(messages))
        await messages.aclose()

    listener = asyncio.create_task(listen())
    await subscribed.wait()
    assert await first.publish("cancel", {"request": "r1"}) == 1
    assert await first.publish("cancel", ["r2", 2]) == 1
    await asyncio.wait_for(listener, 30)
    assert received == [{"request": "r1"}, ["r2", 2]]


async def test_an_unreachable_redis_is_a_503() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    shared = Shared.connect(f"redis://127.0.0.1:{port}/0", "lamina_test:", timeout=2)
    try:
        with pytest.raises(StorageUnavailable) as failed:
            await shared.incr("x")
        assert failed.value.status == 503 and "storage 'redis'" in failed.value.message
    finally:
        await shared.close()
