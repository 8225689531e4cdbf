"""The storage seam: what routers keep (registries, job queues) goes through these protocols, never a database.

A storage backend is a plugin (`register_storage_backends`); core's own is SQLite (`lamina.storage.sqlite`). The
run config's `storage:` section picks one; every API's router then gets the same `Storage` in its deps.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)


def dumps(value: Any) -> str:
    """A `KVStore.set` value's JSON text, for backends that store text."""
    return value.model_dump_json() if isinstance(value, BaseModel) else json.dumps(value)


class KVStore(Protocol):
    """JSON values under string keys. Keys are namespaced by prefix (`models/`, `vector_stores/`, ...)."""

    async def get(self, key: str) -> Any | None: ...

    async def set(self, key: str, value: Any) -> None:
        """Store `value`: anything `json.dumps` takes, or a pydantic model, stored as its `model_dump_json()` (the
        same JSON as `model_dump(mode="json")` gives, made without the dict, several times cheaper)."""
        ...

    async def delete(self, key: str) -> bool: ...

    async def values(self, prefix: str) -> list[Any]:
        """Every value whose key starts with `prefix`, in key order."""
        ...


@dataclass
class Job:
    """A unit of background work. `id` changes whenever the job is enqueued again, so a worker holding an old
    lease can tell its work was superseded."""

    id: str
    kind: str
    key: str
    payload: dict[str, Any]
    attempts: int


class JobQueue(Protocol):
    """Durable, leased background jobs: at most one job per (kind, key); a job is run by one worker at a time.

    A worker `claim`s a job with a lease and `renew`s it while it works; when a worker dies its lease expires and
    the next `claim` (by any process sharing the storage) hands the job out again.
    """

    async def enqueue(self, kind: str, key: str, payload: dict[str, Any]) -> Job:
        """Queue work for `key`, replacing any queued or running job of the same key (whose worker then loses
        its lease)."""
        ...

    async def ensure(self, kind: str, key: str, payload: dict[str, Any]) -> bool:
        """Queue work for `key` unless a job of that key is already queued or running (an insert that does
        nothing on conflict); True when it queued one. Idempotent, unlike `enqueue`."""
        ...

    async def claim(self, kind: str, worker: str, lease_seconds: float) -> Job | None:
        """Hand out one job of `kind` that no live lease holds (queued, or its worker's lease expired), leased
        to `worker` until `lease_seconds` from now. Two claimers never get the same job."""
        ...

    async def renew(self, job: Job, worker: str, lease_seconds: float) -> bool:
        """Extend the lease; False when the job was cancelled, superseded or taken over (stop working on it)."""
        ...

    async def finish(self, job: Job, worker: str) -> bool:
        """Remove the job if this worker still holds it; False otherwise (its result must then be dropped)."""
        ...

    async def release(self, job: Job, worker: str) -> bool:
        """Give a job back unfinished (a worker shutting down): it can be claimed again at once, and the attempt
        does not count. False when this worker no longer held it."""
        ...

    async def cancel(self, kind: str, key: str) -> bool: ...

    async def count(self, kind: str) -> int: ...


class Storage(Protocol):
    """What a storage backend gives the stack."""

    kv: KVStore
    jobs: JobQueue

    async def close(self) -> None: ...


class Registry(Generic[T]):
    """Objects of one type in the key-value store, read through on every access so that every process sharing
    the storage sees the same objects. `key(obj)` names an object inside the registry's prefix."""

    def __init__(self, kv: KVStore, prefix: str, model: type[T], key: Callable[[T], str]) -> None:
        self.kv = kv
        self.prefix = prefix
        self.model = model
        self.key = key

    async def get(self, key: str) -> T | None:
        value = await self.kv.get(self.prefix + key)
        return None if value is None else self.model.model_validate(value)

    async def put(self, obj: T) -> T:
        await self.kv.set(self.prefix + self.key(obj), obj)
        return obj

    async def delete(self, key: str) -> bool:
        return await self.kv.delete(self.prefix + key)

    async def list(self, prefix: str = "") -> list[T]:
        return [self.model.model_validate(value) for value in await self.kv.values(self.prefix + prefix)]


StorageFactory = Callable[[Any, Any], Awaitable[Storage]]
