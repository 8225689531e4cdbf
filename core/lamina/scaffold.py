"""`lamina plugin new`: a provider package to start from, which installs, shows in `lamina providers` and passes
its own tests (a real server through `lamina.testing.serve`) before its author changes a line.

The files are `string.Template`s under `lamina/templates/plugin/`: the shared ones at the top, and per API the
provider module and its test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

import lamina

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Kind:
    protocol: str
    description: str
    usage: str  # run-config lines that put the provider to use, under the README's providers example


KINDS = {
    "inference": Kind(
        "lamina.apis.inference.provider.InferenceProvider",
        "answers chat completions and completions with a prefix and the prompt",
        "# model id: $name/$name-1",
    ),
    "safety": Kind(
        "lamina.apis.safety.provider.SafetyProvider",
        "flags messages that contain one of its words",
        "apis:\n  safety:\n    shields:\n      - {id: $name, provider_id: $name}",
    ),
    "files": Kind(
        "lamina.apis.files.provider.FilesProvider",
        "keeps uploaded files' bytes in a folder, one file per id",
        "# the files router keeps ids, names and expiry in the stack's storage",
    ),
    "vector_io": Kind(
        "lamina.apis.vector_io.provider.VectorIOProvider",
        "keeps vector stores' chunks in SQLite and searches them by cosine similarity",
        "# vector stores need an embedding model: set apis.vector_io.default_embedding_model",
    ),
}


def new_plugin(name: str, api: str, parent: Path) -> Path:
    """Write the package `lamina-<name>` for a provider of `api` into `parent`; returns its folder. Raises
    ValueError for a bad name or API, FileExistsError when the folder exists."""
    name = name.removeprefix("lamina-")
    if not NAME.match(name):
        raise ValueError(f"'{name}' is not a plugin name: lowercase letters, digits and single hyphens, e.g. acme-chat")
    if api not in KINDS:
        raise ValueError(f"no template for the {api} API; choose one of {', '.join(KINDS)}")
    kind = KINDS[api]
    module = "lamina_" + name.replace("-", "_")
    folder = parent / f"lamina-{name}"
    if folder.exists():
        raise FileExistsError(f"{folder} already exists")
    major, minor = (int(part) for part in lamina.__version__.split(".")[:2])
    values = {
        "name": name,
        "dist": f"lamina-{name}",
        "module": module,
        "api": api,
        "type": f"inline::{name}",
        "protocol": kind.protocol,
        "core_floor": f"{major}.{minor}",
        "core_ceiling": f"{major}.{minor + 1}" if major == 0 else f"{major + 1}",
    }
    values["description"] = Template(kind.description).substitute(values)
    values["usage"] = Template(kind.usage).substitute(values)
    templates = files("lamina") / "templates" / "plugin"
    layout = {
        "pyproject.toml": templates / "pyproject.toml.tmpl",
        "README.md": templates / "README.md.tmpl",
        f"{module}/__init__.py": templates / "__init__.py.tmpl",
        f"{module}/provider.py": templates / api / "provider.py.tmpl",
        f"tests/test_{module.removeprefix('lamina_')}.py": templates / api / "test.py.tmpl",
    }
    for relative, template in layout.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_render(template, values))
    return folder


def _render(template: Traversable, values: dict[str, str]) -> str:
    return Template(template.read_text()).substitute(values)
