"""API keys: core's auth provider `api_keys`, and the `lamina keys` and `lamina usage` commands.

A key is `lmn-` and 43 random URL-safe characters (256 bits). Only its SHA-256 is stored (`auth/api_keys/<hash>`
in the stack's storage, so every process and backend sharing the storage shares the keys): a fast hash is
enough because keys are random, not chosen by people, so there is no dictionary to try; a slow one (bcrypt,
argon2) would cost milliseconds a request. Verified keys are cached in the process for `cache_seconds`, which is
therefore how long a revocation or expiry can take to be seen by a running server.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, Field

import lamina
from lamina.access import Principal
from lamina.specs import AuthDeps, AuthProviderSpec, ProviderConfig
from lamina.storage import KVStore, Registry, Storage

PREFIX = "lmn-"
CACHE_LIMIT = 10_000


class ApiKey(BaseModel):
    id: str
    name: str  # the principal: keys of one name share what they own
    hash: str
    prefix: str  # the key's first characters, to recognise it in listings
    attributes: dict[str, list[str]] = {}
    scopes: list[str] | None = None  # API names (`files`, `inference`, ...) and `admin`; None: every API
    limits: dict[str, int] = {}  # lamina.quotas.Limits fields
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def view(self) -> dict[str, Any]:
        return self.model_dump(exclude={"hash"})


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keys_registry(kv: KVStore) -> Registry[ApiKey]:
    return Registry(kv, "auth/api_keys/", ApiKey, key=lambda record: record.hash)


class ApiKeysConfig(ProviderConfig):
    cache_seconds: float = Field(5.0, ge=0, description="how long a verified key is trusted without a lookup")


class ApiKeys:
    def __init__(self, config: ApiKeysConfig, kv: KVStore) -> None:
        self.registry = keys_registry(kv)
        self.cache_seconds = config.cache_seconds
        self.cache: dict[str, tuple[ApiKey | None, Principal | None, float]] = {}

    async def authenticate(self, token: str) -> Principal | None:
        if not token.startswith(PREFIX):
            return None
        digest = key_hash(token)
        now = time.monotonic()
        cached = self.cache.get(digest)
        if cached is None or cached[2] <= now:
            record = await self.registry.get(digest)
            principal = None if record is None else principal_of(record)
            if len(self.cache) >= CACHE_LIMIT:
                self.cache.clear()
            cached = self.cache[digest] = (record, principal, now + self.cache_seconds)
        record, principal = cached[0], cached[1]
        return principal if record is not None and record.usable(time.time()) else None


def principal_of(record: ApiKey) -> Principal:
    return Principal(
        principal=record.name,
        attributes=record.attributes,
        key_id=record.id,
        scopes=tuple(record.scopes) if record.scopes is not None else None,
        limits=record.limits,
    )


async def create_api_keys(config: ApiKeysConfig, deps: AuthDeps) -> ApiKeys:
    return ApiKeys(config, deps.storage.kv)


async def create_key(
    kv: KVStore,
    name: str,
    *,
    attributes: dict[str, list[str]] | None = None,
    scopes: list[str] | None = None,
    limits: dict[str, int] | None = None,
    expires_in: float | None = None,
) -> tuple[str, ApiKey]:
    """A new key for principal `name`: (the key, shown once and never stored; its record)."""
    key = PREFIX + secrets.token_urlsafe(32)
    now = int(time.time())
    record = ApiKey(
        id="key_" + secrets.token_hex(8),
        name=name,
        hash=key_hash(key),
        prefix=key[:10],
        attributes=attributes or {},
        scopes=scopes,
        limits=limits or {},
        created_at=now,
        expires_at=None if expires_in is None else int(now + expires_in),
    )
    await keys_registry(kv).put(record)
    return key, record


async def revoke_key(kv: KVStore, key_id: str) -> ApiKey | None:
    registry = keys_registry(kv)
    for record in await registry.list():
        if record.id == key_id:
            revoked = record.model_copy(update={"revoked_at": int(time.time())})
            return await registry.put(revoked)
    return None


@lamina.hookimpl
def register_auth_providers() -> list[AuthProviderSpec]:
    return [
        AuthProviderSpec(
            type="api_keys",
            config=ApiKeysConfig,
            create=create_api_keys,
            description="API keys made with `lamina keys create`, stored hashed in the stack's storage",
        )
    ]


# --- the commands -----------------------------------------------------------------------------------------------

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    unit = text[-1:].lower()
    try:
        return float(text[:-1]) * DURATION_UNITS[unit] if unit in DURATION_UNITS else float(text)
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a duration like 3600, 90m, 12h or 30d") from None


async def _with_storage(config_name: str, work: Any) -> Any:
    from lamina.cli import find_run_config, plugin_manager
    from lamina.config import ConfigError, load, validate_section
    from lamina.plugins import storage_backends

    pm = plugin_manager()
    try:
        config = load(find_run_config(config_name, pm))
        backend = storage_backends(pm).get(config.storage.type)
        if backend is None:
            raise ConfigError(f"{config.source}: storage.type: no storage backend '{config.storage.type}'")
        storage_config = validate_section(backend.config, config.storage.config, config.source, "storage.config")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    data_dir = Path(config.data_dir())
    data_dir.mkdir(parents=True, exist_ok=True)
    storage: Storage = await backend.create(storage_config, data_dir)
    try:
        return await work(storage.kv)
    finally:
        await storage.close()


def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{value}' is not KEY=VALUE", param_hint=option)
        pairs.append((key, item))
    return pairs


CONFIG_OPTION = click.option(
    "--config",
    "config_name",
    envvar="LAMINA_CONFIG",
    default="starter",
    show_default=True,
    help="the distro or run.yaml whose storage keeps the keys (env LAMINA_CONFIG)",
)


@lamina.hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.group()
    def keys() -> None:
        """Create, list and revoke API keys (the `api_keys` auth provider)."""

    @keys.command("create")
    @click.argument("name")
    @click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="an attribute (roles=admin, teams=ml)")
    @click.option("--scope", "scopes", multiple=True, help="an API this key may use (files, inference, admin, ...)")
    @click.option("--limit", "limits", multiple=True, metavar="NAME=N", help="requests_per_minute=60, token_budget=..")
    @click.option("--expires-in", help="a lifetime like 3600, 90m, 12h or 30d (default: none)")
    @CONFIG_OPTION
    def create(
        name: str,
        attrs: tuple[str, ...],
        scopes: tuple[str, ...],
        limits: tuple[str, ...],
        expires_in: str | None,
        config_name: str,
    ) -> None:
        """Make an API key for principal NAME; the key is printed once, alone on the last line."""
        from lamina.quotas import LIMIT_NAMES

        attributes: dict[str, list[str]] = {}
        for key, value in _pairs(attrs, "--attr"):
            attributes.setdefault(key, []).extend(v for v in value.split(",") if v)
        parsed_limits = {}
        for key, value in _pairs(limits, "--limit"):
            if key not in LIMIT_NAMES or not value.isdigit():
                raise click.BadParameter(
                    f"'{key}={value}': one of {', '.join(LIMIT_NAMES)}, = a count", param_hint="--limit"
                )
            parsed_limits[key] = int(value)
        lifetime = parse_duration(expires_in) if expires_in else None

        async def work(kv: KVStore) -> tuple[str, ApiKey]:
            return await create_key(
                kv, name, attributes=attributes, scopes=list(scopes) or None, limits=parsed_limits, expires_in=lifetime
            )

        key, record = asyncio.run(_with_storage(config_name, work))
        expiry = (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.expires_at)) if record.expires_at else "never"
        )
        click.echo(f"created {record.id} for {name} (expires: {expiry}); the key is shown only now:", err=True)
        click.echo(key)

    @keys.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @CONFIG_OPTION
    def list_keys(as_json: bool, config_name: str) -> None:
        """List API keys (never the keys themselves)."""
        from lamina.cli import echo_rows

        async def work(kv: KVStore) -> list[ApiKey]:
            return await keys_registry(kv).list()

        now = time.time()
        rows = []
        for record in sorted(asyncio.run(_with_storage(config_name, work)), key=lambda r: r.created_at):
            status = "revoked" if record.revoked_at else "expired" if not record.usable(now) else "active"
            rows.append({**record.view(), "status": status})
        columns = [
            ("id", "ID"),
            ("name", "NAME"),
            ("prefix", "PREFIX"),
            ("status", "STATUS"),
            ("attributes", "ATTRIBUTES"),
            ("scopes", "SCOPES"),
            ("expires_at", "EXPIRES_AT"),
        ]
        echo_rows(columns, rows, as_json)

    @keys.command("revoke")
    @click.argument("key_id")
    @CONFIG_OPTION
    def revoke(key_id: str, config_name: str) -> None:
        """Revoke the key KEY_ID (as `lamina keys list` shows it)."""

        async def work(kv: KVStore) -> ApiKey | None:
            return await revoke_key(kv, key_id)

        if asyncio.run(_with_storage(config_name, work)) is None:
            raise click.ClickException(f"no API key {key_id}; `lamina keys list` shows them")
        click.echo(f"revoked {key_id}")

    @cli.command("usage")
    @click.option("--day", help="one day, YYYY-MM-DD (default: all)")
    @click.option("--key", "key_id", help="one key id")
    @click.option("--json", "as_json", is_flag=True)
    @CONFIG_OPTION
    def usage(day: str | None, key_id: str | None, as_json: bool, config_name: str) -> None:
        """Requests and tokens per API key and model."""
        from lamina.cli import echo_rows
        from lamina.quotas import read_usage

        async def work(kv: KVStore) -> list[dict[str, Any]]:
            return await read_usage(kv, day=day, key_id=key_id)

        columns = [
            ("key_id", "KEY"),
            ("principal", "PRINCIPAL"),
            ("model", "MODEL"),
            ("requests", "REQUESTS"),
            ("prompt_tokens", "PROMPT_TOKENS"),
            ("completion_tokens", "COMPLETION_TOKENS"),
        ]
        echo_rows(columns, asyncio.run(_with_storage(config_name, work)), as_json)
