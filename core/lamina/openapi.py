"""`/v1/openapi.json`, generated from the same pydantic models the routes validate with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {k: {"type": ["string", "null"]} for k in ("message", "type", "param", "code")},
        }
    },
}


def openapi_document(routes: list[tuple[str, Any]], version: str) -> dict[str, Any]:
    models: set[type[BaseModel]] = set()
    for _, r in routes:
        info = getattr(r, "openapi", {})
        models |= {m for m in (info.get("body"), info.get("response")) if m is not None}
    keyed, schema = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, Any] = {}
    for api, r in routes:
        info = getattr(r, "openapi", {})
        for method in sorted((r.methods or set()) - {"HEAD"}):
            operation: dict[str, Any] = {
                "tags": [api],
                "summary": info.get("summary") or (r.endpoint.__doc__ or r.name).strip(),
                "responses": {
                    "200": {"description": "OK"},
                    "4XX": {"description": "Error", "content": {"application/json": {"schema": ERROR}}},
                },
            }
            if body := info.get("body"):
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": keyed[(body, "validation")]}},
                }
            if response := info.get("response"):
                operation["responses"]["200"]["content"] = {
                    "application/json": {"schema": keyed[(response, "validation")]}
                }
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in r.param_convertors
            ]
            if query := info.get("query"):
                properties = query.model_json_schema().get("properties", {})
                parameters += [{"name": name, "in": "query", "schema": schema} for name, schema in properties.items()]
            if parameters:
                operation["parameters"] = parameters
            paths.setdefault("/v1" + r.path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Lamina", "version": version},
        "paths": paths,
        "components": {"schemas": schema.get("$defs", {})},
    }
