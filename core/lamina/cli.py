"""The `lamina` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from lamina import __version__
from lamina.config import ConfigError, RunConfig, load, redact
from lamina.errors import LaminaError
from lamina.plugins import PluginError, api_specs, distro_specs, list_plugins, make_plugin_manager, provider_specs


def find_run_config(name_or_path: str) -> Path:
    """A distro name (from `lamina distros`) or a path to a run.yaml."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path or Path(name_or_path).is_file():
        return Path(name_or_path)
    distros = distro_specs(make_plugin_manager())
    if name_or_path not in distros:
        known = ", ".join(sorted(distros)) or "none installed"
        raise click.ClickException(
            f"no distro named '{name_or_path}' (known: {known}) and no such file; "
            "install one with `pip install ./distros/<name>` or pass a path to a run.yaml"
        )
    return distros[name_or_path].run_config


def load_run_config(name_or_path: str, env: tuple[str, ...]) -> RunConfig:
    for pair in env:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--env")
        os.environ[key] = value
    try:
        return load(find_run_config(name_or_path))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="lamina")
def cli() -> None:
    """Lamina: an OpenAI-compatible server built from plugins."""


@cli.command()
@click.argument("distro")
@click.option("--port", type=int, help="port to listen on (default: the run config's, 8321)")
@click.option("--host", help="address to bind (default: the run config's, 127.0.0.1)")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="set an environment variable first")
def run(distro: str, port: int | None, host: str | None, env: tuple[str, ...]) -> None:
    """Serve DISTRO (a distro name or a path to a run.yaml)."""
    from lamina.server import serve

    config = load_run_config(distro, env)
    if port is not None:
        config.server.port = port
    if host is not None:
        config.server.host = host
    logging.basicConfig(level=os.environ.get("LAMINA_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    if not any(config.providers.values()):
        click.echo(
            f"note: {config.source} enables no provider; see its comments for the variables that enable them",
            err=True,
        )
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config))
    except (ConfigError, LaminaError, PluginError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


def _loop_factory() -> Any:
    try:
        import uvloop  # an optional speed-up: `pip install uvloop`
    except ImportError:
        return None
    return uvloop.new_event_loop


@cli.command()
def distros() -> None:
    """List installed distros."""
    for spec in sorted(distro_specs(make_plugin_manager()).values(), key=lambda s: s.name):
        click.echo(f"{spec.name:<16} {spec.package} {spec.version}  {spec.description}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def providers(as_json: bool) -> None:
    """List every installed provider type with its package and version."""
    specs = sorted(provider_specs(make_plugin_manager()).values(), key=lambda s: (s.api, s.type))
    if as_json:
        rows = [{"api": s.api, "type": s.type, "package": s.package, "version": s.version} for s in specs]
        click.echo(json.dumps(rows, indent=2))
        return
    for s in specs:
        click.echo(f"{s.api:<12} {s.type:<36} {s.package} {s.version}")


@cli.command()
def apis() -> None:
    """List the APIs this installation serves."""
    for spec in sorted(api_specs(make_plugin_manager()).values(), key=lambda s: s.name):
        click.echo(f"{spec.name:<14} {spec.description}")


@cli.command()
def plugins() -> None:
    """List loaded plugins and the hooks each implements."""
    click.echo(json.dumps(list_plugins(make_plugin_manager()), indent=2))


@cli.command()
@click.argument("distro")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="set an environment variable first")
def config(distro: str, env: tuple[str, ...]) -> None:
    """Print DISTRO's run config, resolved, with secrets redacted."""
    resolved = load_run_config(distro, env)
    click.echo(yaml.safe_dump(redact(resolved.model_dump(mode="json")), sort_keys=False), nl=False)


def main() -> None:
    from lamina.pulls import models_command

    cli.add_command(models_command)
    try:
        make_plugin_manager().hook.register_commands(cli=cli)
    except PluginError as exc:
        sys.exit(f"Error: {exc}")
    cli()
