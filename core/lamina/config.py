"""The run config: a YAML file naming the providers of each API, with `${env.VAR}` substitution.

${env.VAR}             the variable's value; an error if it is unset (unless the provider is disabled)
${env.VAR:=default}    the value, or `default` when unset or empty
${env.VAR:+value}      `value` when VAR is set and non-empty, else empty; used as a provider id it
                       enables that provider only when VAR is set (an empty id disables the provider)
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lamina.auth import AuthConfig
from lamina.paths import home

PLACEHOLDER = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)(?:(:=|:\+)([^}]*))?\}")
PLACEHOLDER_NAME = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)")
SECRET_KEY = re.compile(
    r"(api[_-]?key|token|secret|passw(or)?d|authorization|credential|organization|cookie)", re.IGNORECASE
)
URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s]*):([^/@\s]+)@")
REDACTED = "********"
log = logging.getLogger("lamina")
M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A run config that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8321, ge=0, le=65535)
    access_log: bool = False
    # Limits and timeouts (lamina.guard; docs/operators.md explains each).
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest JSON request body; larger: 413")
    body_timeout: float = Field(30.0, gt=0, description="seconds a request body may pause between chunks: 408")
    idle_timeout: float = Field(
        30.0, gt=0, description="seconds a connection may sit idle, or take to send a request's headers"
    )
    allowed_hosts: list[str] = Field(
        [], description="Host names accepted besides loopback names when bound to loopback without auth"
    )
    cors_origins: list[str] = Field([], description="browser origins allowed to call the API (CORS); `*` for any")


class StorageConfig(_Strict):
    dir: str | None = None  # the data directory; default: $LAMINA_HOME/<distro>
    type: str = "sqlite"  # a storage backend (`register_storage_backends`) for registries and jobs
    config: dict[str, Any] = {}


class ProviderEntry(_Strict):
    """One provider of the run config: an id of the user's choosing, a provider type, and its config."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    type: str = Field(pattern=r"^(inline|remote)::[A-Za-z0-9_.\-]+$")
    config: dict[str, Any] = {}


class RedisConfig(_Strict):
    """`redis:`: what server processes share beyond storage, through Redis (lamina.shared; docs/deploy.md)."""

    url: str | None = Field(None, description="e.g. redis://127.0.0.1:6379/0; unset: nothing shared beyond storage")
    prefix: str = Field("lamina:", description="of every key and channel, so deployments can share one Redis")
    model_list_seconds: int = Field(300, ge=1, description="how long an upstream's model list is cached")


class RunConfig(_Strict):
    version: int = 1
    distro: str = "custom"
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    providers: dict[str, list[ProviderEntry]] = {}
    apis: dict[str, dict[str, Any]] = {}  # API name -> that API's config, validated by the API when it starts
    telemetry: dict[str, Any] = {}  # for an observability plugin (lamina-telemetry), which validates it
    auth: AuthConfig = AuthConfig()  # off unless it lists a provider (docs/auth.md)
    redis: RedisConfig = RedisConfig()  # what processes share beyond storage (lamina.shared); off unless `url`
    source: str = Field("<dict>", exclude=True)  # where it was read from, for error messages
    # API name -> the variables that would enable its providers that were left out, for `lamina run`'s advice
    disabled: dict[str, list[str]] = Field({}, exclude=True)

    def data_dir(self) -> Path:
        return Path(self.storage.dir).expanduser() if self.storage.dir else home() / self.distro

    @model_validator(mode="after")
    def _quotas_share_redis(self) -> RunConfig:
        # One Redis for everything shared: rate-limit counters use `redis.url` unless `auth.quotas` names another.
        if self.redis.url and not self.auth.quotas.redis_url:
            quotas = self.auth.quotas.model_copy(update={"redis_url": self.redis.url})
            self.auth = self.auth.model_copy(update={"quotas": quotas})  # a copy: the default is shared
        return self


# Keys that moved under `apis:`: old run configs keep working, with a warning that says where each now goes.
MOVED_KEYS = {
    "models": ("inference", "models"),
    "shields": ("safety", "shields"),
    "guardrails": ("safety", "guardrails"),
    "vector_stores": ("vector_io", None),
}


def migrate(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Move the pre-`apis:` top-level keys to where they now live, warning once per key."""
    raw = dict(raw)
    apis = {name: dict(section or {}) for name, section in (raw.get("apis") or {}).items()}
    for key, (api, subkey) in MOVED_KEYS.items():
        if key not in raw:
            continue
        value = raw.pop(key)
        section = apis.setdefault(api, {})
        where = f"apis.{api}.{subkey}" if subkey else f"apis.{api}"
        log.warning("%s: the top-level `%s:` key is deprecated; move it to `%s`", source, key, where)
        if subkey:
            section[subkey] = value
        elif isinstance(value, dict):
            section.update(value)
    if apis:
        raw["apis"] = apis
    return raw


def substitute(value: Any, where: str, missing: list[str]) -> Any:
    """Replace `${env...}` placeholders in every string of a YAML tree; collect unset variables."""
    if isinstance(value, dict):
        substituted = {key: substitute(item, f"{where}.{key}", missing) for key, item in value.items()}
        # Leave out keys whose placeholder stood for nothing (see below); explicit nulls stay.
        return {key: item for key, item in substituted.items() if item is not None or value[key] is None}
    if isinstance(value, list):
        return [substitute(item, f"{where}[{i}]", missing) for i, item in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, operator, operand = match.groups()
        current = os.environ.get(name, "")
        if operator == ":=":
            return current or operand
        if operator == ":+":
            return operand if current else ""
        if name not in os.environ:
            missing.append(f"{name} (at {where.lstrip('.')})")
        return current

    whole = PLACEHOLDER.fullmatch(value)
    result = PLACEHOLDER.sub(replace, value)
    # A value that is one placeholder standing for nothing is absent, so the field's default applies.
    return None if whole and result == "" else result


def drop_disabled(value: Any) -> Any:
    """The `apis:` tree without the list entries switched off like providers are: a shield, guardrail or any
    other entry whose `id` or `shield` is a placeholder that substitutes to nothing (`${env.X:+name}`, X unset)."""
    if isinstance(value, dict):
        return {key: drop_disabled(item) for key, item in value.items()}
    if isinstance(value, list):
        return [drop_disabled(item) for item in value if not _switched_off(item)]
    return value


def _switched_off(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    names = [entry[key] for key in ("id", "shield") if isinstance(entry.get(key), str) and "${" in entry[key]]
    return any(substitute(name, "", []) is None for name in names)


def resolve(raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Substitute environment variables, drop disabled providers, and validate."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a run config is a YAML mapping, got {type(raw).__name__}")
    raw = migrate(raw, source)
    providers: dict[str, list[Any]] = {}
    disabled: dict[str, list[str]] = {}
    missing: list[str] = []
    for api, entries in (raw.pop("providers", None) or {}).items():
        if not isinstance(entries, list):
            raise ConfigError(f"{source}: providers.{api} must be a list of providers")
        enabled = []
        for i, entry in enumerate(entries):
            if isinstance(entry, dict) and not substitute(entry.get("id"), "", []):
                # An id that substitutes to nothing disables the provider; its variables would enable it.
                disabled.setdefault(api, []).extend(PLACEHOLDER_NAME.findall(str(entry.get("id") or "")))
                continue
            enabled.append(substitute(entry, f"providers.{api}[{i}]", missing))
        providers[api] = enabled
    for section in ("apis", "auth"):  # auth: a provider whose id substitutes to nothing is off
        if section in raw:
            raw[section] = drop_disabled(raw[section])
    rest = substitute(raw, "", missing)
    if missing:
        raise ConfigError(f"{source}: environment variable(s) not set: {', '.join(missing)}")
    disabled = {api: variables for api, variables in disabled.items() if variables}
    try:
        config = RunConfig.model_validate({**rest, "providers": providers, "source": source, "disabled": disabled})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{source}: {key}: {first['msg']}") from None
    ids = [p.id for entries in config.providers.values() for p in entries]
    if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
        raise ConfigError(f"{source}: provider ids must be unique; repeated: {', '.join(duplicates)}")
    return config


def load(path: Path | str) -> RunConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read run config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    return resolve(raw or {}, str(path))


def redact(value: Any) -> Any:
    """A copy of a config tree with every secret-looking value masked, for showing or logging: values under
    secret-looking keys (`api_key`, `X-Api-Key`, `OpenAI-Organization`, ...) and passwords inside URLs."""
    if isinstance(value, dict):
        return {
            key: REDACTED if SECRET_KEY.search(str(key)) and item not in (None, "") else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str) and "@" in value:
        return URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", value)
    return value


def validate_section(model: type[M], value: Any, source: str, where: str) -> M:
    """Validate one section of a run config with its model; a ConfigError names the file and the key."""
    try:
        return model.model_validate(value if value is not None else {})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        key = ".".join([where, *(str(part) for part in first["loc"])])
        raise ConfigError(f"{source}: {key}: {first['msg']}") from None
