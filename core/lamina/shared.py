"""What several server processes must share at once, beyond storage: cancellations of running work, and upstream
model lists.

With the run config's `redis.url` set (needs `lamina-stack[redis]`), a cancellation is published on a Redis
channel every process sharing that Redis listens to, so work running in another process (another `--workers`
worker, another replica) stops at once rather than at its next lease renewal; and a provider's model list is
cached there for `model_list_seconds`, so replicas starting together ask the upstream once. Without it, the
process is the deployment: cancellations stay in the process and every start asks the upstream.

Storage stays the source of truth (a cancelled job is cancelled in the `JobQueue` too); Redis only makes it prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from lamina.config import ConfigError, RedisConfig

log = logging.getLogger("lamina")
RECONNECT_SECONDS = 1.0  # between attempts to listen again after Redis went away
LOCK_SECONDS = 10  # how long one process may take to list a provider's models before another tries itself
WAIT_POLL_SECONDS = 0.1  # how often a process waiting for another's model list looks for it


def fingerprint(value: Any) -> str:
    """A short stable digest of a provider's type and config: replicas configured alike share its model list."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Shared:
    """The process's end of the shared state; `start()` before use, `close()` at the end."""

    def __init__(self, config: RedisConfig | None = None, fingerprints: dict[str, str] | None = None) -> None:
        self.config = config or RedisConfig()
        self.fingerprints = fingerprints or {}  # provider id -> fingerprint of its type and config
        self.client: Any = None
        self.listener: asyncio.Task[None] | None = None
        self.watched: dict[tuple[str, str], asyncio.Task[Any] | None] = {}
        self.cancelled_here: set[tuple[str, str]] = set()
        self.channel = f"{self.config.prefix}cancel"

    async def start(self) -> None:
        if not self.config.url:
            return
        try:
            import redis.asyncio
        except ImportError:
            raise ConfigError(
                "redis.url is set but the redis package is not installed: pip install 'lamina-stack[redis]'"
            ) from None
        self.client = redis.asyncio.Redis.from_url(self.config.url)
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)  # before serving: no cancellation published after start is missed
        except Exception as exc:
            await self.client.aclose()
            raise ConfigError(f"redis.url: Redis cannot be reached ({type(exc).__name__})") from None
        self.listener = asyncio.create_task(self._listen(pubsub), name="shared cancellations")

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
            await asyncio.gather(self.listener, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()

    # -- cancellation

    def watch(self, kind: str, key: str, task: asyncio.Task[Any] | None = None) -> None:
        """Work of `kind` on `key` runs here: a cancellation from any process cancels `task` (if given) and makes
        `cancelled(kind, key)` true. `unwatch` when the work ends."""
        self.watched[(kind, key)] = task

    def unwatch(self, kind: str, key: str) -> None:
        self.watched.pop((kind, key), None)
        self.cancelled_here.discard((kind, key))

    def cancelled(self, kind: str, key: str) -> bool:
        return (kind, key) in self.cancelled_here

    async def cancel(self, kind: str, key: str) -> None:
        """Stop the work of `kind` on `key` wherever it runs (here, and through Redis in every other process).
        The caller has recorded the cancellation in storage first, which stays the truth if Redis is down."""
        self._cancel_here(kind, key)
        if self.client is None:
            return
        try:
            await self.client.publish(self.channel, json.dumps([kind, key]))
        except Exception as exc:  # the lease renewal notices the cancellation later
            log.warning("could not publish the cancellation of %s %s to Redis: %s", kind, key, type(exc).__name__)

    def _cancel_here(self, kind: str, key: str) -> None:
        if (kind, key) not in self.watched:
            return
        self.cancelled_here.add((kind, key))
        task = self.watched[(kind, key)]
        if task is not None and not task.done():
            task.cancel()

    async def _listen(self, pubsub: Any) -> None:
        while True:
            try:
                async for message in pubsub.listen():
                    with contextlib.suppress(ValueError, TypeError):
                        kind, key = json.loads(message["data"])
                        self._cancel_here(str(kind), str(key))
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:
                log.warning("listening for cancellations on Redis failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(RECONNECT_SECONDS)
                with contextlib.suppress(Exception):
                    await pubsub.subscribe(self.channel)

    # -- model lists

    async def model_list(
        self, provider_id: str, fetch: Callable[[], Awaitable[list[dict[str, Any]]]]
    ) -> list[dict[str, Any]]:
        """The provider's model list: from Redis when a process configured alike listed it in the last
        `model_list_seconds`, else from `fetch()` (then cached). While one process fetches, the others wait for it
        (at most `LOCK_SECONDS`), so replicas starting together ask the upstream once."""
        if self.client is None:
            return await fetch()
        key = f"{self.config.prefix}models:{provider_id}:{self.fingerprints.get(provider_id, '')}"
        try:
            token = secrets.token_hex(8)
            for _ in range(int(LOCK_SECONDS / WAIT_POLL_SECONDS)):
                cached = await self.client.get(key)
                if cached is not None:
                    listed: list[dict[str, Any]] = json.loads(cached)
                    return listed
                if await self.client.set(f"{key}:lock", token, nx=True, ex=LOCK_SECONDS):
                    break
                await asyncio.sleep(WAIT_POLL_SECONDS)
        except Exception as exc:  # Redis down: the upstream is still there
            log.warning("the model-list cache (Redis) cannot be reached: %s", type(exc).__name__)
            return await fetch()
        try:
            models = await fetch()
            with contextlib.suppress(Exception):
                await self.client.set(key, json.dumps(models), ex=self.config.model_list_seconds)
            return models
        finally:
            with contextlib.suppress(Exception):
                if await self.client.get(f"{key}:lock") == token.encode():
                    await self.client.delete(f"{key}:lock")
