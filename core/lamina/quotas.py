"""Quotas, rate limits and usage accounting of authenticated callers.

Limits apply per API key, per user (principal) and per team (each value of the caller's `teams` attribute):
requests and tokens per minute and per day in fixed windows, and a token budget that never resets. A request is
counted before it runs (and refused with a 429 when a window is full); its tokens are counted after it ran, so the
request that crosses a token limit completes and the next one is refused. Counters live in Redis when
`auth.quotas.redis_url` is set (processes sharing it share the limits; needs `lamina-stack[redis]`), in the
process otherwise.

Usage (requests, prompt and completion tokens per key, model and day) is kept in the stack's storage: each
process adds to rows of its own in memory and writes them every `FLUSH_SECONDS` and when it stops, so
`/v1alpha/admin/usage` and `lamina usage` sum them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from lamina.access import Principal
from lamina.errors import LaminaError
from lamina.storage import KVStore

log = logging.getLogger("lamina")
FLUSH_SECONDS = 5.0
USAGE_PREFIX = "auth/usage/"
DAY = 86400


class Limits(BaseModel):
    """Limits of one key, user or team; None is no limit."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(None, ge=0)
    requests_per_day: int | None = Field(None, ge=0)
    tokens_per_minute: int | None = Field(None, ge=0)
    tokens_per_day: int | None = Field(None, ge=0)
    token_budget: int | None = Field(None, ge=0, description="tokens in all, never reset")

    def any(self) -> bool:
        return any(value is not None for value in self.model_dump().values())

    def counts_tokens(self) -> bool:
        return any(v is not None for v in (self.tokens_per_minute, self.tokens_per_day, self.token_budget))


LIMIT_NAMES = tuple(Limits.model_fields)


class QuotasConfig(BaseModel):
    """`auth.quotas` in the run config."""

    model_config = ConfigDict(extra="forbid")

    redis_url: str | None = None  # e.g. redis://127.0.0.1:6379/0; counters in the process when unset
    redis_prefix: str = "lamina:quota:"
    default: Limits = Limits()  # every user's, unless `users` names it
    users: dict[str, Limits] = {}
    teams: dict[str, Limits] = {}


class Counters(Protocol):
    async def update(self, increments: Sequence[tuple[str, int, int]], reads: Sequence[str]) -> list[int]:
        """Add each (key, amount, ttl seconds) and return the new values, then the values of `reads` (0 when
        absent), in one round trip."""
        ...

    async def close(self) -> None: ...


class MemoryCounters:
    def __init__(self) -> None:
        self.values: dict[str, tuple[int, float]] = {}  # key -> (value, expires at, monotonic)

    def _get(self, key: str, now: float) -> int:
        entry = self.values.get(key)
        if entry is None or entry[1] <= now:
            return 0
        return entry[0]

    async def update(self, increments: Sequence[tuple[str, int, int]], reads: Sequence[str]) -> list[int]:
        now = time.monotonic()
        if len(self.values) > 100_000:  # expired windows are only dropped here
            self.values = {k: v for k, v in self.values.items() if v[1] > now}
        results = []
        for key, amount, ttl in increments:
            entry = self.values.get(key)
            expires = entry[1] if entry is not None and entry[1] > now else now + ttl
            value = self._get(key, now) + amount
            self.values[key] = (value, expires)
            results.append(value)
        return results + [self._get(key, now) for key in reads]

    async def close(self) -> None:
        pass


# One command per check: add to each window (giving it its lifetime when it is new), then read the others. A script
# is one round trip and atomic, where a pipeline of INCRBY/EXPIRE/GET costs twice the parsing.
UPDATE_SCRIPT = """
local added = tonumber(ARGV[1])
local out = {}
for i = 1, added do
  local amount = tonumber(ARGV[2 * i])
  local value = redis.call('INCRBY', KEYS[i], amount)
  if value == amount then redis.call('EXPIRE', KEYS[i], ARGV[2 * i + 1]) end
  out[i] = value
end
for i = added + 1, #KEYS do out[i] = tonumber(redis.call('GET', KEYS[i]) or '0') end
return out
"""


class RedisCounters:
    def __init__(self, url: str) -> None:
        try:
            import redis.asyncio
        except ImportError:
            raise LaminaError(
                "auth.quotas.redis_url is set but the redis package is not installed: "
                "pip install 'lamina-stack[redis]'",
                status=500,
                type="server_error",
            ) from None
        self.client: Any = redis.asyncio.Redis.from_url(url)
        self.script: Any = self.client.register_script(UPDATE_SCRIPT)

    async def update(self, increments: Sequence[tuple[str, int, int]], reads: Sequence[str]) -> list[int]:
        keys = [key for key, _, _ in increments] + list(reads)
        args: list[int] = [len(increments)]
        for _, amount, ttl in increments:
            args += [amount, ttl]
        try:
            answers = await self.script(keys=keys, args=args)
        except Exception as exc:
            raise LaminaError(
                f"the rate-limit counters (Redis) cannot be reached: {type(exc).__name__}",
                status=503,
                type="server_error",
                code="rate_limiter_unavailable",
            ) from None
        return [int(value) for value in answers]

    async def close(self) -> None:
        await self.client.aclose()


@dataclass
class RequestUsage:
    """What one request used, filled in by the routers that know (`note_usage`)."""

    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


current_usage: contextvars.ContextVar[RequestUsage | None] = contextvars.ContextVar("lamina_usage", default=None)


def note_usage(model: str, usage: Any) -> None:
    """Record the tokens an answer reports (OpenAI's `usage` object) against the current request, if it is
    accounted (auth is on). Called by the inference router for answers and for stream chunks carrying usage."""
    record = current_usage.get()
    if record is None:
        return
    record.model = model
    if isinstance(usage, dict):
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        record.prompt_tokens += prompt if isinstance(prompt, int) else 0
        record.completion_tokens += completion if isinstance(completion, int) else 0


def note_model(model: str) -> None:
    record = current_usage.get()
    if record is not None and not record.model:
        record.model = model


def too_many(message: str, retry_after: int | None, kind: str) -> LaminaError:
    error = LaminaError(message, status=429, type=kind, code="rate_limit_exceeded")
    if retry_after is not None:
        error.headers = {"retry-after": str(retry_after)}
    return error


@dataclass
class Subject:
    name: str  # key:<id>, user:<principal>, team:<team>
    limits: Limits


class Quotas:
    def __init__(self, config: QuotasConfig, kv: KVStore) -> None:
        self.config = config
        self.counters: Counters = RedisCounters(config.redis_url) if config.redis_url else MemoryCounters()
        self.prefix = config.redis_prefix
        self.kv = kv
        self.process = uuid.uuid4().hex[:12]
        self.usage: dict[tuple[str, str, str, str], list[int]] = {}  # (day, key, principal, model) -> counts
        self.dirty: set[tuple[str, str, str, str]] = set()
        self.flusher: asyncio.Task[None] | None = None
        self.limited = config.default.any() or any(v.any() for v in [*config.users.values(), *config.teams.values()])

    def start(self) -> None:
        self.flusher = asyncio.create_task(self._flush_forever(), name="usage flush")

    async def close(self) -> None:
        if self.flusher is not None:
            self.flusher.cancel()
            await asyncio.gather(self.flusher, return_exceptions=True)
        await self.flush()
        await self.counters.close()

    def subjects(self, caller: Principal) -> list[Subject]:
        subjects = []
        if caller.limits:
            subjects.append(Subject(f"key:{caller.key_id}", Limits.model_validate(dict(caller.limits))))
        if self.limited:
            user = self.config.users.get(caller.principal, self.config.default)
            if user.any():
                subjects.append(Subject(f"user:{caller.principal}", user))
            for team in caller.attributes.get("teams", []):
                if (limits := self.config.teams.get(team)) is not None and limits.any():
                    subjects.append(Subject(f"team:{team}", limits))
        return subjects

    async def admit(self, subjects: list[Subject]) -> None:
        """Count a request against every subject's windows; a 429 when one is full."""
        if not subjects:
            return
        now = time.time()
        minute, day = int(now // 60), int(now // DAY)
        increments: list[tuple[str, int, int]] = []
        reads: list[str] = []
        checks: list[tuple[str, int, int | None, str]] = []  # what, limit, retry after, kind, in order of answers
        for s in subjects:
            base = f"{self.prefix}{s.name}"
            if s.limits.requests_per_minute is not None:
                increments.append((f"{base}:r:m:{minute}", 1, 120))
                checks.append((f"{s.name}: requests per minute", s.limits.requests_per_minute, 60, "requests"))
            if s.limits.requests_per_day is not None:
                increments.append((f"{base}:r:d:{day}", 1, DAY + 60))
                checks.append((f"{s.name}: requests per day", s.limits.requests_per_day, DAY, "requests"))
        for s in subjects:
            base = f"{self.prefix}{s.name}"
            if s.limits.tokens_per_minute is not None:
                reads.append(f"{base}:t:m:{minute}")
                checks.append((f"{s.name}: tokens per minute", s.limits.tokens_per_minute - 1, 60, "tokens"))
            if s.limits.tokens_per_day is not None:
                reads.append(f"{base}:t:d:{day}")
                checks.append((f"{s.name}: tokens per day", s.limits.tokens_per_day - 1, DAY, "tokens"))
            if s.limits.token_budget is not None:
                reads.append(f"{base}:t:total")
                checks.append((f"{s.name}: token budget", s.limits.token_budget - 1, None, "insufficient_quota"))
        values = await self.counters.update(increments, reads)
        for (what, limit, period, kind), used in zip(checks, values, strict=True):
            if used > limit:
                if period is None:
                    raise LaminaError(
                        f"{what} of {limit + 1} tokens is used up", status=429, type=kind, code="insufficient_quota"
                    )
                retry = max(1, math.ceil(period - now % period))
                shown = limit + 1 if kind == "tokens" else limit
                raise too_many(f"rate limit reached for {what}: limit {shown}, used {used}", retry, kind)

    async def spend(self, subjects: list[Subject], tokens: int) -> None:
        counted = [s for s in subjects if s.limits.counts_tokens()]
        if not counted or tokens <= 0:
            return
        now = time.time()
        minute, day = int(now // 60), int(now // DAY)
        increments = []
        for s in counted:
            base = f"{self.prefix}{s.name}"
            increments += [
                (f"{base}:t:m:{minute}", tokens, 120),
                (f"{base}:t:d:{day}", tokens, DAY + 60),
                (f"{base}:t:total", tokens, 10 * 365 * DAY),
            ]
        await self.counters.update(increments, [])

    def account(self, caller: Principal, usage: RequestUsage) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        row = (day, caller.key_id or caller.principal, caller.principal, usage.model or "-")  # "-": no model
        counts = self.usage.setdefault(row, [0, 0, 0])
        counts[0] += 1
        counts[1] += usage.prompt_tokens
        counts[2] += usage.completion_tokens
        self.dirty.add(row)

    async def flush(self) -> None:
        rows, self.dirty = self.dirty, set()
        for row in rows:
            day, key_id, principal, model = row
            requests, prompt, completion = self.usage[row]
            value = {
                "day": day,
                "key_id": key_id,
                "principal": principal,
                "model": model,
                "requests": requests,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
            }
            await self.kv.set(f"{USAGE_PREFIX}{day}/{key_id}/{self.process}/{model}", value)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:
                log.exception("auth: writing usage failed; it is tried again in %ss", FLUSH_SECONDS)


@dataclass
class UsageRow:
    key_id: str
    principal: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    days: set[str] = field(default_factory=set)


async def read_usage(kv: KVStore, *, day: str | None = None, key_id: str | None = None) -> list[dict[str, Any]]:
    """Usage summed over processes (and days, unless `day` picks one), per key and model."""
    prefix = USAGE_PREFIX + (f"{day}/" if day else "") + (f"{key_id}/" if day and key_id else "")
    rows: dict[tuple[str, str], UsageRow] = {}
    for value in await kv.values(prefix):
        if key_id is not None and value["key_id"] != key_id:
            continue
        row = rows.setdefault(
            (value["key_id"], value["model"]), UsageRow(value["key_id"], value["principal"], value["model"])
        )
        row.requests += value["requests"]
        row.prompt_tokens += value["prompt_tokens"]
        row.completion_tokens += value["completion_tokens"]
        row.days.add(value["day"])
    return [
        {
            "key_id": row.key_id,
            "principal": row.principal,
            "model": row.model,
            "requests": row.requests,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "total_tokens": row.prompt_tokens + row.completion_tokens,
            "days": sorted(row.days),
        }
        for row in sorted(rows.values(), key=lambda r: (r.key_id, r.model))
    ]
