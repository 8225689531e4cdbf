"""lamina-auth: authentication providers for Lamina's `auth:` section.

`jwt`     OAuth2 / OIDC bearer tokens (JWTs) verified against the keys of a JWKS URL
`custom`  asks an operator's HTTP endpoint who a bearer token belongs to

Heavy parts (PyJWT, aiohttp) are imported when a provider is created, not when Lamina loads the plugin.
"""

from __future__ import annotations

import lamina
from lamina.specs import AuthDeps, AuthProviderSpec

from lamina_auth.config import CustomConfig, JwtConfig


async def create_jwt(config: JwtConfig, deps: AuthDeps) -> object:
    from lamina_auth.jwt import JwtAuthenticator

    return JwtAuthenticator(config, deps.provider_id)


async def create_custom(config: CustomConfig, deps: AuthDeps) -> object:
    from lamina_auth.custom import CustomAuthenticator

    return CustomAuthenticator(config, deps.provider_id)


@lamina.hookimpl
def register_auth_providers() -> list[AuthProviderSpec]:
    return [
        AuthProviderSpec(
            type="jwt",
            config=JwtConfig,
            create=create_jwt,
            description="OAuth2/OIDC bearer JWTs verified against a JWKS URL; claims become attributes",
        ),
        AuthProviderSpec(
            type="custom",
            config=CustomConfig,
            create=create_custom,
            description="asks an HTTP endpoint of yours who a bearer token belongs to",
        ),
    ]
