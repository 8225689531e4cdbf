"""Authentication and ownership: who the caller is, and whether it may touch a stored object.

The run config's `auth:` section turns it on (docs/auth.md). Then every request but `/v1/health` (and CORS
preflights) needs `Authorization: Bearer <token>`; the configured providers (`register_auth_providers`: core's
`api_keys`, the `lamina-auth` plugin's `jwt` and `custom`) are asked in order, and the first that accepts the
token names the caller: a `Principal`. The middleware carries it to the routers in a context variable, together
with the access policy, and checks the key's scopes and the caller's quotas.

Routers use three functions, and nothing else, for ownership (docs/apis.md "How a router enforces ownership"):

    owner()                                   the Owner to stamp on an object being created (None: auth is off)
    can(action, kind, identifier, owner)      whether the caller may; always True when auth is off
    require(action, kind, identifier, owner)  raise 403 when it may not (for create, update, delete)
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.access import AccessRule, Action, Owner, Principal, is_allowed
from lamina.errors import LaminaError
from lamina.quotas import Quotas, QuotasConfig, RequestUsage, current_usage, read_usage

if TYPE_CHECKING:
    from pathlib import Path

    import pluggy

    from lamina.resolver import Stack
    from lamina.specs import AuthProviderSpec
    from lamina.storage import Storage

log = logging.getLogger("lamina")
OPEN_PATHS = frozenset({"/v1/health", "/v1/health/ready"})


class AuthProviderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    type: str  # an auth provider type: `api_keys`, or one a plugin registers (`lamina plugins`)
    config: dict[str, Any] = {}


class AuthConfig(BaseModel):
    """The run config's `auth:` section. Auth is on when it lists a provider."""

    model_config = ConfigDict(extra="forbid")

    providers: list[AuthProviderEntry] = []
    access_policy: list[AccessRule] = []  # empty: callers may do anything to what they own, and read the unowned
    quotas: QuotasConfig = QuotasConfig()


@dataclass(frozen=True)
class Caller:
    principal: Principal
    policy: list[AccessRule]


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("lamina_caller", default=None)


def caller() -> Principal | None:
    """The authenticated caller of the request being served; None when auth is off (or outside a request)."""
    current = _caller.get()
    return current.principal if current else None


def owner() -> Owner | None:
    """The owner to record on an object the current request creates."""
    current = _caller.get()
    return current.principal.owner() if current else None


def can(action: Action, kind: str, identifier: str, owner: Owner | None) -> bool:
    """Whether the current caller may `action` the object `kind::identifier` owned by `owner`."""
    current = _caller.get()
    if current is None:
        return True
    return is_allowed(current.policy, current.principal, action, kind, identifier, owner)


def forbidden(message: str) -> LaminaError:
    return LaminaError(message, status=403, type="permission_denied_error", code="permission_denied")


def require(action: Action, kind: str, identifier: str, owner: Owner | None) -> None:
    """Raise a 403 unless the current caller may `action` the object (one it can already see, or a new one)."""
    if not can(action, kind, identifier, owner):
        raise forbidden(f"you may not {action} {kind} '{identifier}'")


@contextmanager
def acting_as(section: Auth | None, owner: Owner | None) -> Iterator[None]:
    """Do work outside the request that asked for it (a batch's lines, run by a background worker) as the owner of
    the object it belongs to: what it reads is checked, and what it creates is owned, as if that caller had asked.
    `section` is the stack's (`stack.auth`); a no-op when auth is off or the object has no owner."""
    if section is None or owner is None:
        yield
        return
    principal = Principal(principal=owner.principal, attributes=owner.attributes)
    token = _caller.set(Caller(principal, section.policy))
    try:
        yield
    finally:
        _caller.reset(token)


class Auth:
    """A started `auth:` section: the authenticators in order, the policy, the quotas."""

    def __init__(self, authenticators: list[tuple[str, Any]], policy: list[AccessRule], quotas: Quotas) -> None:
        self.authenticators = authenticators
        self.policy = policy
        self.quotas = quotas

    async def authenticate(self, token: str) -> Principal:
        for provider_id, authenticator in self.authenticators:
            principal: Principal | None = await authenticator.authenticate(token)
            if principal is not None:
                return principal if principal.provider else _with_provider(principal, provider_id)
        raise unauthorized("the bearer token is not valid (unknown, expired or revoked)", "invalid_api_key")


def _with_provider(principal: Principal, provider_id: str) -> Principal:
    return replace(principal, provider=provider_id)


def unauthorized(message: str, code: str) -> LaminaError:
    error = LaminaError(message, status=401, type="invalid_request_error", code=code)
    error.headers = {"www-authenticate": "Bearer"}
    return error


def check_auth(config: AuthConfig, pm: pluggy.PluginManager, source: str) -> list[tuple[str, AuthProviderSpec, Any]]:
    """Each auth provider of the section with its spec and validated config. Raises ConfigError."""
    from lamina.config import ConfigError, validate_section
    from lamina.plugins import auth_provider_specs

    if not config.providers:
        return []
    specs = auth_provider_specs(pm)
    checked = []
    for entry in config.providers:
        spec = specs.get(entry.type)
        if spec is None:
            raise ConfigError(
                f"{source}: auth.providers '{entry.id}': no auth provider type '{entry.type}' is installed; "
                f"known: {', '.join(sorted(specs)) or 'none'} (JWTs and custom endpoints: pip install lamina-auth)"
            )
        where = f"auth.providers '{entry.id}' config"
        checked.append((entry.id, spec, validate_section(spec.config, entry.config, source, where)))
    return checked


async def start_auth(
    config: AuthConfig, pm: pluggy.PluginManager, storage: Storage, data_dir: Path, exits: AsyncExitStack, source: str
) -> Auth | None:
    """Start the `auth:` section's providers and quotas; None when it lists no provider (auth is off)."""
    from lamina.specs import AuthDeps

    checked = check_auth(config, pm, source)
    if not checked:
        return None
    authenticators = []
    for provider_id, spec, provider_config in checked:
        authenticator = await spec.create(
            provider_config, AuthDeps(provider_id, data_dir / "auth" / provider_id, storage)
        )
        if (close := getattr(authenticator, "close", None)) is not None:
            exits.push_async_callback(close)
        authenticators.append((provider_id, authenticator))
    quotas = Quotas(config.quotas, storage.kv)
    quotas.start()
    exits.push_async_callback(quotas.close)
    log.info("auth is on: %s", ", ".join(f"{e.id} ({e.type})" for e in config.providers))
    return Auth(authenticators, config.access_policy, quotas)


def _bearer(scope: Scope) -> str:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise unauthorized("the Authorization header must be `Bearer <token>`", "invalid_api_key")
    raise unauthorized(
        "no bearer token: send your API key in an `Authorization: Bearer <key>` header", "missing_api_key"
    )


def _api_by_segment(stack: Stack) -> dict[str, str]:
    """The API of each prefix and first path segment (`/v1/files` -> files, `/v1/chat` -> inference,
    `/v1alpha/inference` -> rerank, `/v1beta/connectors` -> tool_runtime)."""
    from lamina.http import prefix_of

    apis: dict[str, str] = {}
    for name, spec in stack.api_specs.items():
        for route in spec.routes:
            path: str = getattr(route, "path", "")
            apis.setdefault(prefix_of(route) + "/" + path.strip("/").split("/", 1)[0], name)
    return apis


def _first_segments(path: str) -> str:
    """`/v1alpha/inference/rerank` -> `/v1alpha/inference`."""
    return "/".join(path.split("/", 3)[:3])


def protect(app: ASGIApp, stack: Stack) -> ASGIApp:
    """The authentication middleware of a stack whose `auth:` section is on (else `app` itself)."""
    from lamina.http import error_response

    auth: Auth | None = getattr(stack, "auth", None)
    if auth is None:
        return app
    segments = _api_by_segment(stack)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in OPEN_PATHS:
            await app(scope, receive, send)
            return
        path: str = scope["path"]
        try:
            principal = await auth.authenticate(_bearer(scope))
            if path.startswith("/v1alpha/admin/usage"):
                if not principal.is_admin:
                    raise forbidden("usage is for admins (the `admin` scope, or `admin` in roles)")
            elif principal.scopes is not None:
                api = segments.get(_first_segments(path))
                if api is not None and api not in principal.scopes:
                    raise forbidden(f"this key's scopes ({', '.join(principal.scopes)}) do not include the {api} API")
            subjects = auth.quotas.subjects(principal)
            await auth.quotas.admit(subjects)
        except LaminaError as exc:
            await error_response(exc)(scope, receive, send)
            return
        usage = RequestUsage()
        caller_token = _caller.set(Caller(principal, auth.policy))
        usage_token = current_usage.set(usage)
        try:
            await app(scope, receive, send)
        finally:
            _caller.reset(caller_token)
            current_usage.reset(usage_token)
            auth.quotas.account(principal, usage)
            if usage.tokens:
                try:
                    await auth.quotas.spend(subjects, usage.tokens)
                except Exception:
                    log.exception("auth: counting the tokens of %s failed", principal.principal)

    return guarded


async def usage_endpoint(request: Request) -> Response:
    """Usage per API key and model: requests, prompt and completion tokens (`?day=YYYY-MM-DD`, `?key_id=`)."""
    from lamina.http import json_response, stack_of

    stack = stack_of(request)
    auth: Auth | None = getattr(stack, "auth", None)
    if auth is not None:
        await auth.quotas.flush()
    day, key_id = request.query_params.get("day"), request.query_params.get("key_id")
    return json_response({"object": "list", "data": await read_usage(stack.storage.kv, day=day, key_id=key_id)})
