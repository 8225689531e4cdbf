"""`Shared`: counters and broadcasts that every replica connected to one Redis sees."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import redis.asyncio
import redis.exceptions
from lamina.errors import StorageUnavailable

STORE = "redis"


@contextlib.contextmanager
def reachable() -> Iterator[None]:
    """Redis unreachable (refused, timed out, connection lost) becomes a 503 naming it."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise StorageUnavailable(STORE, f"{type(exc).__name__}: {exc}"[:300]) from exc


class Shared:
    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    @classmethod
    def connect(cls, url: str, prefix: str = "lamina:", timeout: float = 5.0) -> Shared:
        """Connections are opened on first use, and again after Redis comes back."""
        client = redis.asyncio.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return cls(client, prefix)

    async def incr(self, name: str, amount: int = 1, ttl_seconds: float | None = None) -> int:
        """Add `amount` and return the new value; with `ttl_seconds`, a counter that did not exist expires then."""
        key = self.prefix + name
        with reachable():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incrby(key, amount)
                if ttl_seconds is not None:
                    pipe.pexpire(key, int(ttl_seconds * 1000), nx=True)
                value, *_ = await pipe.execute()
        return int(value)

    async def get(self, name: str) -> int:
        with reachable():
            value = await self.client.get(self.prefix + name)
        return int(value) if value is not None else 0

    async def reset(self, name: str) -> None:
        with reachable():
            await self.client.delete(self.prefix + name)

    async def publish(self, channel: str, message: Any) -> int:
        """Send a JSON message to every current subscriber of `channel` (any replica); returns how many got it."""
        with reachable():
            return int(await self.client.publish(self.prefix + channel, json.dumps(message)))

    async def subscribe(self, channel: str) -> AsyncIterator[Any]:
        """The messages published to `channel` from now on, until the caller stops iterating."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            with reachable():
                await pubsub.subscribe(self.prefix + channel)
            while True:
                with reachable():
                    message = await pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "message":
                    yield json.loads(message["data"])
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        await self.client.aclose()
