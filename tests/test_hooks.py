"""Every hook is documented: docs/plugins.md has a `## name(args)` section for each hookspec, and no other."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from lamina import hookspecs

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
HEADING = re.compile(r"^##\s+`?([A-Za-z_][A-Za-z0-9_]*)\(([^)]*)\)`?\s*$", re.MULTILINE)


def hookspec_signatures() -> dict[str, str]:
    specs = {}
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(function, "lamina_spec"):  # set by pluggy's @hookspec
            specs[name] = ", ".join(inspect.signature(function).parameters)
    return specs


def test_there_are_hookspecs() -> None:
    specs = hookspec_signatures()
    assert {"register_apis", "register_providers", "register_distros"} <= set(specs)
    assert specs["asgi_wrapper"] == "stack"


def test_every_hookspec_is_documented() -> None:
    specs = hookspec_signatures()
    assert DOC.is_file(), f"{DOC} is missing; it needs a section per hook: " + ", ".join(
        f"## {name}({args})" for name, args in sorted(specs.items())
    )
    documented = {name: re.sub(r"\s+", " ", args.strip()) for name, args in HEADING.findall(DOC.read_text())}
    missing = [f"## {name}({args})" for name, args in sorted(specs.items()) if documented.get(name) != args]
    stale = [f"## {name}({args})" for name, args in sorted(documented.items()) if name not in specs]
    assert not missing, f"{DOC} lacks (or has other arguments in) these headings: {missing}"
    assert not stale, f"{DOC} documents hooks that lamina.hookspecs does not declare: {stale}"
