"""`jwt`: bearer tokens signed by an OAuth2 / OIDC issuer, checked against the keys its JWKS URL publishes.

Keys are fetched once and kept `jwks_cache_seconds`; a token naming a key id that is not among them (the issuer
rotated its keys) refreshes them, at most every `jwks_refresh_min_seconds`. A verified token is remembered until
it expires (at most a minute), so a client sending the same token again costs a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import jwt
from lamina.access import Principal
from lamina.errors import UpstreamError

from lamina_auth.config import JwtConfig

TOKEN_CACHE_LIMIT = 10_000
TOKEN_CACHE_SECONDS = 60.0


class JwtAuthenticator:
    def __init__(self, config: JwtConfig, provider_id: str) -> None:
        self.config = config
        self.provider_id = provider_id
        self.keys: dict[str, Any] = {}  # key id -> PyJWK
        self.fetched_at = -float("inf")
        self.lock = asyncio.Lock()
        self.verified: dict[str, tuple[Principal, float]] = {}  # token -> (principal, trusted until, wall clock)
        self.session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def authenticate(self, token: str) -> Principal | None:
        if token.count(".") != 2:
            return None  # not a JWT: another provider's token
        now = time.time()
        cached = self.verified.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return None
        key = await self._key(header.get("kid"))
        if key is None:
            return None
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=self.config.algorithms,
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_seconds,
                options={"require": ["exp"], "verify_aud": self.config.audience is not None},
            )
        except jwt.InvalidTokenError:
            return None
        principal = self._principal(claims)
        if principal is None:
            return None
        if len(self.verified) >= TOKEN_CACHE_LIMIT:
            self.verified.clear()
        self.verified[token] = (principal, min(float(claims["exp"]), now + TOKEN_CACHE_SECONDS))
        return principal

    def _principal(self, claims: dict[str, Any]) -> Principal | None:
        name = claims.get(self.config.principal_claim)
        if not isinstance(name, str) or not name:
            return None
        attributes: dict[str, list[str]] = {}
        for claim, attribute in self.config.claims_mapping.items():
            value = claims.get(claim)
            values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
            attributes.setdefault(attribute, []).extend(str(v) for v in values)
        scopes = None
        if self.config.scopes_claim is not None:
            raw = claims.get(self.config.scopes_claim)
            scopes = tuple(raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else [])
        attributes = {k: v for k, v in attributes.items() if v}
        return Principal(principal=name, attributes=attributes, scopes=scopes, provider=self.provider_id)

    async def _key(self, kid: str | None) -> Any:
        now = time.monotonic()
        if now - self.fetched_at > self.config.jwks_cache_seconds:
            await self._refresh(now)
        elif kid not in self.keys and now - self.fetched_at >= self.config.jwks_refresh_min_seconds:
            await self._refresh(now)  # an unknown key id: the issuer may have rotated its keys
        if kid is None and len(self.keys) == 1:
            return next(iter(self.keys.values()))
        return self.keys.get(kid or "")

    async def _refresh(self, started: float) -> None:
        async with self.lock:
            if self.fetched_at >= started:
                return  # another request refreshed while this one waited
            if self.session is None:
                self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds))
            try:
                async with self.session.get(self.config.jwks_url) as response:
                    if response.status != 200:
                        raise UpstreamError(self.provider_id, f"the JWKS URL answered {response.status}", status=503)
                    document = await response.json(content_type=None)
                keys = jwt.PyJWKSet.from_dict(document).keys
            except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWKSetError) as exc:
                raise UpstreamError(
                    self.provider_id, f"cannot fetch the JWKS to verify tokens: {type(exc).__name__}", status=503
                ) from None
            self.keys = {key.key_id or "": key for key in keys}
            self.fetched_at = time.monotonic()
