"""The run config: environment substitution, disabled providers, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lamina import ApiSpec, ProviderSpec, hookimpl
from lamina.config import REDACTED, ConfigError, load, redact, resolve
from lamina.plugins import make_plugin_manager
from lamina.resolver import check, start_stack
from pydantic import BaseModel


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


GATEWAY = """
distro: gateway
server:
  port: ${env.T_PORT:=9000}
  host: ${env.T_HOST}
providers:
  inference:
    - id: ${env.T_FIRST_URL:+first}
      type: remote::openai
      config:
        base_url: ${env.T_FIRST_URL}
        api_key: ${env.T_KEY:=}
    - id: ${env.T_SECOND_URL:+second}
      type: remote::openai
      config:
        base_url: ${env.T_SECOND_URL}
"""


def test_env_substitution_defaults_and_disabled_providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("T_PORT", "T_FIRST_URL", "T_SECOND_URL", "T_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("T_HOST", "0.0.0.0")
    monkeypatch.setenv("T_FIRST_URL", "http://127.0.0.1:1/v1")
    config = load(write(tmp_path, GATEWAY))
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9000)  # `:=` default, coerced to int
    # `:+` made `second`'s id empty: it is dropped, and its unset ${env.T_SECOND_URL} is no error.
    assert [p.id for p in config.providers["inference"]] == ["first"]
    assert config.providers["inference"][0].config == {"base_url": "http://127.0.0.1:1/v1"}  # empty key -> absent
    assert config.source == str(tmp_path / "run.yaml")

    monkeypatch.setenv("T_PORT", "9100")
    monkeypatch.setenv("T_SECOND_URL", "http://127.0.0.1:2/v1")
    monkeypatch.setenv("T_KEY", "sk-live")
    config = load(write(tmp_path, GATEWAY))
    assert config.server.port == 9100
    assert [p.id for p in config.providers["inference"]] == ["first", "second"]
    assert config.providers["inference"][0].config["api_key"] == "sk-live"


def test_placeholder_inside_a_longer_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_HOSTNAME", "example.test")
    monkeypatch.delenv("T_UNSET", raising=False)
    config = resolve({"storage": {"dir": "/data/${env.T_HOSTNAME}/x${env.T_UNSET:=y}"}})
    assert config.storage.dir == "/data/example.test/xy"


def test_placeholder_standing_for_nothing_leaves_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T_UNSET", raising=False)
    config = resolve(
        {"server": {"port": "${env.T_UNSET:=}", "host": "${env.T_UNSET:+0.0.0.0}"}, "storage": {"dir": None}}
    )
    assert (config.server.port, config.server.host, config.storage.dir) == (8321, "127.0.0.1", None)


def test_entries_under_apis_switched_off_by_their_name_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T_GUARD", raising=False)
    monkeypatch.setenv("T_ON", "1")
    raw = {
        "providers": {
            "safety": [
                {"id": "rules", "type": "inline::rules"},
                {"id": "${env.T_GUARD:+guard}", "type": "inline::llama-guard", "config": {"model": "${env.T_GUARD}"}},
            ]
        },
        "apis": {
            "safety": {
                "shields": [
                    {"id": "rules", "provider_id": "rules"},
                    {"id": "${env.T_GUARD:+guard}", "provider_id": "guard"},
                    {"id": "${env.T_ON:+also}", "provider_id": "rules"},
                    {"id": None, "provider_id": "rules"},  # written so: the API decides what it means
                ],
                "guardrails": [{"shield": "${env.T_GUARD:+guard}"}, {"shield": "rules", "apply_to": "input"}],
            }
        },
    }
    config = resolve(raw)
    assert config.apis["safety"] == {
        "shields": [
            {"id": "rules", "provider_id": "rules"},
            {"id": "also", "provider_id": "rules"},
            {"id": None, "provider_id": "rules"},
        ],
        "guardrails": [{"shield": "rules", "apply_to": "input"}],
    }
    assert [p.id for p in config.providers["safety"]] == ["rules"]
    assert config.disabled == {"safety": ["T_GUARD"]}  # what would enable the provider left out
    monkeypatch.setenv("T_GUARD", "some/model")
    config = resolve(raw)
    assert [s["id"] for s in config.apis["safety"]["shields"]] == ["rules", "guard", "also", None]
    assert len(config.apis["safety"]["guardrails"]) == 2 and config.disabled == {}


def test_missing_env_var_names_variable_key_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T_HOST", raising=False)
    monkeypatch.delenv("T_FIRST_URL", raising=False)
    monkeypatch.delenv("T_SECOND_URL", raising=False)
    path = write(tmp_path, GATEWAY)
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and "T_HOST" in message and "server.host" in message


def test_bad_yaml_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  inference: [\n    - id: x\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value) and "YAML" in str(info.value)


def test_missing_file_names_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "absent.yaml")
    assert "absent.yaml" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("servre:\n  port: 1\n", "servre"),
        ("server:\n  prot: 1\n", "server.prot"),
        ("server:\n  port: 99999\n", "server.port"),
        (
            "providers:\n  inference:\n    - id: a\n      type: remote::openai\n      confg: {}\n",
            "providers.inference.0.confg",
        ),
        ("providers:\n  inference:\n    - id: a\n      type: openai\n", "providers.inference.0.type"),
    ],
)
def test_unknown_or_invalid_key_names_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert f"{key}:" in str(info.value), str(info.value)


def test_api_config_errors_name_the_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "apis:\n  inference:\n    models:\n      - id: m\n")
    with pytest.raises(ConfigError) as info:
        check(load(path), make_plugin_manager())
    assert str(path) in str(info.value) and "apis.inference.models.0.provider_id:" in str(info.value)
    path = write(tmp_path, "apis:\n  inferense: {}\n")
    with pytest.raises(ConfigError, match=r"apis\.inferense: unknown API"):
        check(load(path), make_plugin_manager())


def test_pre_apis_keys_move_under_apis_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = (
        "models:\n  - {id: m, provider_id: p}\nshields:\n  - {id: s, provider_id: r}\n"
        "guardrails:\n  - {shield: s}\nvector_stores:\n  ingestion_concurrency: 2\n"
    )
    config = load(write(tmp_path, text))
    assert config.apis == {
        "inference": {"models": [{"id": "m", "provider_id": "p"}]},
        "safety": {"shields": [{"id": "s", "provider_id": "r"}], "guardrails": [{"shield": "s"}]},
        "vector_io": {"ingestion_concurrency": 2},
    }
    warned = " ".join(record.getMessage() for record in caplog.records)
    for old, new in [("models", "apis.inference.models"), ("guardrails", "apis.safety.guardrails")]:
        assert f"`{old}:` key is deprecated; move it to `{new}`" in warned


def test_duplicate_provider_ids(tmp_path: Path) -> None:
    text = "providers:\n  inference:\n" + "    - {id: same, type: remote::openai}\n" * 2
    with pytest.raises(ConfigError, match="same"):
        load(write(tmp_path, text))


async def start(config: dict[str, Any], pm: Any = None) -> None:
    async with start_stack(resolve(config, "/etc/lamina/test.yaml"), pm):
        pass


async def test_unknown_provider_type_names_type_and_file(tmp_path: Path) -> None:
    config = {
        "storage": {"dir": str(tmp_path)},
        "providers": {"inference": [{"id": "mystery", "type": "remote::nonexistent"}]},
    }
    with pytest.raises(ConfigError) as info:
        await start(config)
    message = str(info.value)
    assert "/etc/lamina/test.yaml" in message and "remote::nonexistent" in message and "'mystery'" in message
    assert "remote::openai" in message  # lists what is installed


async def test_unknown_api_names_api_and_file(tmp_path: Path) -> None:
    config = {"storage": {"dir": str(tmp_path)}, "providers": {"telepathy": [{"id": "x", "type": "remote::openai"}]}}
    with pytest.raises(ConfigError) as info:
        await start(config)
    assert "/etc/lamina/test.yaml" in str(info.value) and "providers.telepathy" in str(info.value)


async def test_bad_provider_config_names_provider_and_key(tmp_path: Path) -> None:
    config = {
        "storage": {"dir": str(tmp_path)},
        "providers": {
            "inference": [
                {
                    "id": "up",
                    "type": "remote::openai",
                    "config": {"base_url": "http://127.0.0.1:9/v1", "max_retries": -1},
                }
            ]
        },
    }
    with pytest.raises(ConfigError) as info:
        await start(config)
    message = str(info.value)
    assert "/etc/lamina/test.yaml" in message and "'up'" in message and "max_retries" in message


class NoConfig(BaseModel):
    pass


async def _create(config: NoConfig, deps: Any) -> object:
    return object()


async def _router(config: Any, providers: dict[str, Any], deps: Any) -> object:
    return object()


class Throwaway:
    """A plugin made for one test: two APIs, each with a provider that needs the other API."""

    def __init__(self, api_needs: dict[str, tuple[str, ...]], provider_needs: dict[str, tuple[str, ...]]) -> None:
        self.api_needs, self.provider_needs = api_needs, provider_needs

    @hookimpl
    def register_apis(self) -> list[ApiSpec]:
        return [ApiSpec(name=name, routes=[], router=_router, needs=needs) for name, needs in self.api_needs.items()]

    @hookimpl
    def register_providers(self) -> list[ProviderSpec]:
        return [
            ProviderSpec(api=api, type=f"inline::{api}", config=NoConfig, create=_create, needs=needs)
            for api, needs in self.provider_needs.items()
        ]


def throwaway_pm(plugin: Throwaway) -> Any:
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(plugin, "throwaway")
    return pm


def providers_for(*apis: str) -> dict[str, Any]:
    return {api: [{"id": f"{api}-1", "type": f"inline::{api}"}] for api in apis}


async def test_cycle_between_providers_needs(tmp_path: Path) -> None:
    pm = throwaway_pm(Throwaway({"alpha": (), "beta": ()}, {"alpha": ("beta",), "beta": ("alpha",)}))
    with pytest.raises(ConfigError) as info:
        await start({"storage": {"dir": str(tmp_path)}, "providers": providers_for("alpha", "beta")}, pm)
    message = str(info.value)
    assert "/etc/lamina/test.yaml" in message and "cycle" in message
    assert "alpha -> beta -> alpha" in message


async def test_cycle_between_api_needs(tmp_path: Path) -> None:
    pm = throwaway_pm(Throwaway({"alpha": ("gamma",), "beta": (), "gamma": ("alpha",)}, {}))
    with pytest.raises(ConfigError, match=r"cycle: alpha -> gamma -> alpha"):
        await start({"storage": {"dir": str(tmp_path)}}, pm)


async def test_provider_needing_an_unconfigured_api(tmp_path: Path) -> None:
    pm = throwaway_pm(Throwaway({"alpha": (), "beta": ()}, {"alpha": ("beta",), "beta": ()}))
    with pytest.raises(ConfigError) as info:
        await start({"storage": {"dir": str(tmp_path)}, "providers": providers_for("alpha")}, pm)
    assert "'alpha-1'" in str(info.value) and "providers.beta" in str(info.value)


async def test_throwaway_plugin_stack_starts_in_dependency_order(tmp_path: Path) -> None:
    pm = throwaway_pm(Throwaway({"alpha": (), "beta": ()}, {"alpha": ("beta",), "beta": ()}))
    config = resolve({"storage": {"dir": str(tmp_path)}, "providers": providers_for("alpha", "beta")})
    async with start_stack(config, pm) as stack:
        assert list(stack.apis)[:2] == ["beta", "alpha"]
        assert {p for p, spec in stack.provider_specs.items() if not spec.auto} == {"alpha-1", "beta-1"}


def test_redact_masks_secrets_only() -> None:
    tree = {
        "api_key": "sk-1",
        "apiKey": "sk-2",
        "nested": [{"token": "t", "password": "p", "url": "http://x"}],
        "headers": {"Authorization": "Bearer z"},
        "empty_api_key": "",
        "port": 1,
        "redis_url": "redis://:hunter2@127.0.0.1:6379/0",
        "email": "ops@example.com",
    }
    assert redact(tree) == {
        "api_key": REDACTED,
        "apiKey": REDACTED,
        "nested": [{"token": REDACTED, "password": REDACTED, "url": "http://x"}],
        "headers": {"Authorization": REDACTED},
        "empty_api_key": "",
        "port": 1,
        "redis_url": f"redis://:{REDACTED}@127.0.0.1:6379/0",  # a password in a URL, whatever the key's name
        "email": "ops@example.com",
    }


def test_redact_masks_the_password_of_urls() -> None:
    tree = {
        "url": "postgresql://lamina:s3cr%40t@db:5432/lamina",
        "others": ["redis://:pw@cache:6379/0", "postgresql://lamina@db/lamina", "http://host/a@b", "no url:x@y"],
    }
    assert redact(tree) == {
        "url": f"postgresql://lamina:{REDACTED}@db:5432/lamina",
        "others": [
            f"redis://:{REDACTED}@cache:6379/0",
            "postgresql://lamina@db/lamina",
            "http://host/a@b",
            "no url:x@y",
        ],
    }
