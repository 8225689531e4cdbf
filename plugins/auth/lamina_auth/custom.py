"""`custom`: an operator's HTTP endpoint says who a bearer token belongs to.

Lamina POSTs `{"token": "<the bearer token>"}` to `endpoint`. A 200 answer `{"principal": "alice", "attributes":
{"roles": ["admin"], "teams": ["ml"]}, "scopes": ["files", "inference"]}` (attributes and scopes optional)
accepts the token; a 401 or 403 refuses it; anything else is the endpoint's fault (a 503 to the client). Answers
are remembered for `cache_seconds`.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import aiohttp
from lamina.access import Principal
from lamina.errors import UpstreamError
from pydantic import BaseModel, ValidationError

from lamina_auth.config import CustomConfig

CACHE_LIMIT = 10_000


class Answer(BaseModel):
    principal: str
    attributes: dict[str, list[str]] = {}
    scopes: list[str] | None = None


class CustomAuthenticator:
    def __init__(self, config: CustomConfig, provider_id: str) -> None:
        self.config = config
        self.provider_id = provider_id
        self.session: aiohttp.ClientSession | None = None
        self.cache: dict[str, tuple[Principal | None, float]] = {}  # token's hash -> (answer, until)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def authenticate(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self.cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = await self._ask(token)
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
        self.cache[digest] = (principal, now + self.config.cache_seconds)
        return principal

    async def _ask(self, token: str) -> Principal | None:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds))
        try:
            async with self.session.post(self.config.endpoint, json={"token": token}) as response:
                if response.status in (401, 403):
                    return None
                if response.status != 200:
                    raise UpstreamError(self.provider_id, f"the auth endpoint answered {response.status}", status=503)
                body: Any = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise UpstreamError(
                self.provider_id, f"the auth endpoint could not be asked: {type(exc).__name__}", status=503
            ) from None
        try:
            answer = Answer.model_validate(body)
        except ValidationError:
            raise UpstreamError(self.provider_id, "the auth endpoint's answer has no `principal`", status=502) from None
        return Principal(
            principal=answer.principal,
            attributes=answer.attributes,
            scopes=tuple(answer.scopes) if answer.scopes is not None else None,
            provider=self.provider_id,
        )
