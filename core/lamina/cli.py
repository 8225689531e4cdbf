"""The `lamina` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

from lamina import __version__
from lamina.config import ConfigError, RunConfig, load, redact
from lamina.errors import LaminaError
from lamina.plugins import (
    PluginError,
    api_specs,
    call_each,
    distro_specs,
    list_plugins,
    make_plugin_manager,
    provider_specs,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import pluggy

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager: the one `main` made and handed to click, or (when `cli` is invoked some
    other way, such as click's test runner) one made on first use and kept for the rest of the command."""
    root = click.get_current_context().find_root()
    if root.obj is None:
        root.obj = make_plugin_manager()
    pm: pluggy.PluginManager = root.obj
    return pm


def find_run_config(name_or_path: str, pm: pluggy.PluginManager | None = None) -> Path:
    """A distro name (from `lamina distros`) or a path to a run.yaml."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path or Path(name_or_path).is_file():
        return Path(name_or_path)
    distros = distro_specs(pm or make_plugin_manager())
    if name_or_path not in distros:
        known = ", ".join(sorted(distros)) or "none installed"
        raise click.ClickException(
            f"no distro named '{name_or_path}' (known: {known}) and no such file; "
            "install one with `pip install ./distros/<name>` or pass a path to a run.yaml"
        )
    return distros[name_or_path].run_config


def load_run_config(name_or_path: str, env: tuple[str, ...], pm: pluggy.PluginManager) -> RunConfig:
    for pair in env:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--env")
        os.environ[key] = value
    try:
        return load(find_run_config(name_or_path, pm))
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

    pm = plugin_manager()
    config = load_run_config(distro, env, pm)
    if port is not None:
        config.server.port = port
    if host is not None:
        config.server.host = host
    configure_logging("INFO")
    if not any(config.providers.values()):
        click.echo(
            f"note: {config.source} enables no provider; see its comments for the variables that enable them",
            err=True,
        )
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config, pm=pm))
    except (ConfigError, LaminaError, PluginError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # an optional speed-up: `pip install uvloop`
    except ImportError:
        return None
    return uvloop.new_event_loop


@cli.command()
def distros() -> None:
    """List installed distros."""
    for spec in sorted(distro_specs(plugin_manager()).values(), key=lambda s: s.name):
        click.echo(f"{spec.name:<16} {spec.package} {spec.version}  {spec.description}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def providers(as_json: bool) -> None:
    """List every installed provider type with its package and version."""
    specs = sorted(provider_specs(plugin_manager()).values(), key=lambda s: (s.api, s.type))
    if as_json:
        rows = [{"api": s.api, "type": s.type, "package": s.package, "version": s.version} for s in specs]
        click.echo(json.dumps(rows, indent=2))
        return
    for s in specs:
        click.echo(f"{s.api:<12} {s.type:<36} {s.package} {s.version}")


@cli.command()
def apis() -> None:
    """List the APIs this installation serves."""
    for spec in sorted(api_specs(plugin_manager()).values(), key=lambda s: s.name):
        click.echo(f"{spec.name:<14} {spec.description}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def plugins(as_json: bool) -> None:
    """List plugins: the hooks each implements, or why it failed to load."""
    rows = list_plugins(plugin_manager())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [("NAME", "PACKAGE", "VERSION", "STATUS", "HOOKS")]
    for row in rows:
        detail = ", ".join(row["hooks"]) if row["status"] == "ok" else row["error"]
        table.append((row["name"], row["package"], row["version"], row["status"], detail))
    widths = [max(len(line[column]) for line in table) for column in range(4)]
    for line in table:
        click.echo("  ".join([*(cell.ljust(width) for cell, width in zip(line[:4], widths, strict=True)), line[4]]))


@cli.command()
@click.argument("distro")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="set an environment variable first")
def config(distro: str, env: tuple[str, ...]) -> None:
    """Print DISTRO's run config, resolved and validated (provider, API and storage configs included), with secrets
    redacted; exits non-zero when it is invalid."""
    from lamina.resolver import check

    pm = plugin_manager()
    resolved = load_run_config(distro, env, pm)
    try:
        check(resolved, pm)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(yaml.safe_dump(redact(resolved.model_dump(mode="json")), sort_keys=False), nl=False)


@cli.group()
def plugin() -> None:
    """Write plugin packages."""


@plugin.command("new")
@click.argument("name")
@click.option("--api", required=True, type=click.Choice(["inference", "safety", "vector_io", "files"]))
@click.option("--dir", "parent", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
def plugin_new(name: str, api: str, parent: Path) -> None:
    """Write lamina-NAME, a provider package for API with its tests, into DIR."""
    from lamina.scaffold import new_plugin

    try:
        folder = new_plugin(name, api, parent)
    except (ValueError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {folder}; next: pip install -e '{folder}[test]' && pytest {folder / 'tests'}")


def configure_logging(default_level: str) -> None:
    """Log records to stderr, one line each; `LAMINA_LOG_LEVEL` overrides the command's default level."""
    logging.basicConfig(format=LOG_FORMAT)
    logging.getLogger().setLevel(os.environ.get("LAMINA_LOG_LEVEL", default_level))


def main() -> None:
    from lamina.pulls import models_command

    # Before the plugins load, so a plugin that fails to is reported as one warning line on stderr.
    configure_logging("WARNING")
    cli.add_command(models_command)
    try:
        pm = make_plugin_manager()
        call_each(pm, "register_commands", cli=cli)  # one at a time: a plugin whose hook raises is dropped alone
        cli(obj=pm)
    except PluginError as exc:
        sys.exit(f"Error: {exc}")
