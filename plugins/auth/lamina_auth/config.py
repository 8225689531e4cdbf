"""The auth providers' settings (`auth.providers[].config`)."""

from __future__ import annotations

from lamina.specs import ProviderConfig
from pydantic import Field


class JwtConfig(ProviderConfig):
    jwks_url: str = Field(description="where the issuer publishes its signing keys (OIDC: jwks_uri)")
    issuer: str | None = Field(None, description="the `iss` every token must have; unchecked when unset")
    audience: str | None = Field(None, description="the `aud` every token must have; unchecked when unset")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    principal_claim: str = "sub"
    claims_mapping: dict[str, str] = Field(
        {"roles": "roles", "groups": "teams", "teams": "teams", "projects": "projects"},
        description="claim -> attribute: each claim's value (a string or list of strings) becomes that attribute",
    )
    scopes_claim: str | None = Field(
        None, description="a claim (e.g. `scope`, space-separated) listing the APIs the token may use; unset: all"
    )
    leeway_seconds: float = Field(5, ge=0, description="clock skew allowed on exp / nbf / iat")
    jwks_cache_seconds: float = Field(3600, ge=0, description="how long fetched keys are used before a refresh")
    jwks_refresh_min_seconds: float = Field(
        10, ge=0, description="a token with an unknown key id refreshes the keys at most this often"
    )
    timeout_seconds: float = Field(5, gt=0)


class CustomConfig(ProviderConfig):
    endpoint: str = Field(description='POST {"token": ...} here; 200 {"principal", "attributes"} or 401')
    timeout_seconds: float = Field(5, gt=0)
    cache_seconds: float = Field(30, ge=0, description="how long an answer is trusted")
