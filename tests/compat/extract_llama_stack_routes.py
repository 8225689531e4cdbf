"""Regenerate llama_stack_0_7_3_routes.txt from Llama Stack's own route declarations.

    pip download --no-deps --python-version 3.12 --only-binary=:all: llama-stack-api==0.7.3 -d /tmp/ls
    unzip -q /tmp/ls/llama_stack_api-0.7.3-py3-none-any.whl -d /tmp/ls/api
    python tests/compat/extract_llama_stack_routes.py /tmp/ls/api/llama_stack_api > tests/compat/llama_stack_0_7_3_routes.txt

Llama Stack 0.7.3 declares every route in `llama_stack_api/<api>/fastapi_routes.py` as a FastAPI decorator
(`@router.get("/path", ..., deprecated=True)`) under the router's `prefix` (`/v1`, `/v1alpha`, `/v1beta`). The
files are read as syntax trees, never imported (they need Python 3.12 and FastAPI). Routes flagged deprecated are
left out of the list and named in its header.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# llama_stack_api/version.py, which the prefixes are f-strings of.
API_LEVELS = {"LLAMA_STACK_API_V1": "v1", "LLAMA_STACK_API_V1BETA": "v1beta", "LLAMA_STACK_API_V1ALPHA": "v1alpha"}
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def literal(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name):
                parts.append(API_LEVELS[part.value.id])
            else:
                parts.append(literal(part))
        return "".join(parts)
    raise ValueError(f"not a path literal: {ast.dump(node)}")


def declared_routes(package: Path) -> list[tuple[str, str, str, bool]]:
    """(method, path, api, deprecated) of every route the package's routers declare, in declaration order."""
    found = []
    for module in sorted(package.glob("*/fastapi_routes.py")):
        tree = ast.parse(module.read_text())
        prefix = ""
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "APIRouter":
                prefix = next((literal(k.value) for k in node.keywords if k.arg == "prefix"), "")
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for decorator in node.decorator_list:
                if not (
                    isinstance(decorator, ast.Call)
                    and isinstance(decorator.func, ast.Attribute)
                    and decorator.func.attr in HTTP_METHODS
                ):
                    continue
                deprecated = any(
                    k.arg == "deprecated" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in decorator.keywords
                )
                path = prefix + literal(decorator.args[0])
                found.append((decorator.func.attr.upper(), path, module.parent.name, deprecated))
    return found


def main() -> None:
    routes = declared_routes(Path(sys.argv[1]))
    served = [r for r in routes if not r[3]]
    deprecated = [r for r in routes if r[3]]
    print(
        "# Llama Stack 0.7.3's HTTP routes: `METHOD /path  # api`, one a line, as llama-stack-api==0.7.3 declares them"
    )
    print("# (llama_stack_api/<api>/fastapi_routes.py; path converters such as {model_id:path} kept as declared).")
    print("# Produced by tests/compat/extract_llama_stack_routes.py, which says how to rerun it.")
    print(f"# {len(routes)} routes declared; the {len(deprecated)} flagged deprecated=True are left out:")
    for method, path, api, _ in deprecated:
        print(f"#   {method} {path}  ({api})")
    print(f"# {len(served)} routes follow.")
    for method, path, api, _ in served:
        print(f"{method} {path}  # {api}")


if __name__ == "__main__":
    main()
