"""`/v1/openapi.json`, generated from the same pydantic models the routes validate with."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute, Route

from lamina.http import ApiRoute, prefix_of

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {k: {"type": ["string", "null"]} for k in ("message", "type", "param", "code")},
        }
    },
}

SERVER_ERRORS = {
    "500": "Internal error",
    "502": "The provider's upstream answered badly, or refused our credentials",
    "503": "The provider's upstream is unreachable or overloaded",
    "504": "The provider's upstream did not answer in time",
}
CONVERTOR = re.compile(r":[a-z]+}")


def openapi_document(owned: list[tuple[str, BaseRoute]], version: str) -> dict[str, Any]:
    """The document of the endpoint routes (API name, route); only `lamina.http.route`s have models."""
    routes = [(api, r) for api, r in owned if isinstance(r, Route)]
    models: set[type[BaseModel]] = set()
    for _, r in routes:
        if isinstance(r, ApiRoute):
            models |= {m for m in (r.body, r.response, r.form) if m is not None}
    keyed, schema = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, Any] = {}
    for api, r in routes:
        described = r if isinstance(r, ApiRoute) else None
        error = (described.error if described else None) or ERROR
        for method in sorted((r.methods or set()) - {"HEAD"}):
            operation: dict[str, Any] = {
                "tags": [api],
                "summary": (r.endpoint.__doc__ or r.name).strip(),
                "responses": {
                    "200": {"description": "OK"},
                    "4XX": {"description": "Bad request", "content": {"application/json": {"schema": error}}},
                    **{
                        status: {"description": description, "content": {"application/json": {"schema": error}}}
                        for status, description in SERVER_ERRORS.items()
                    },
                },
            }
            if described and (body := described.body):
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": keyed[(body, "validation")]}},
                }
            if described and (form := described.form):
                operation["requestBody"] = {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": keyed[(form, "validation")]}},
                }
            if described and (response := described.response):
                content: dict[str, Any] = {"application/json": {"schema": keyed[(response, "validation")]}}
                if described.body is not None and "stream" in described.body.model_fields:
                    content["text/event-stream"] = {"schema": {"type": "string"}}  # `stream: true`
                operation["responses"]["200"]["content"] = content
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in r.param_convertors
            ]
            if described and (query := described.query):
                properties = query.model_json_schema().get("properties", {})
                parameters += [{"name": name, "in": "query", "schema": schema} for name, schema in properties.items()]
            if parameters:
                operation["parameters"] = parameters
            # `{model_id:path}` is Starlette's: OpenAPI knows `{model_id}`.
            paths.setdefault(prefix_of(r) + CONVERTOR.sub("}", r.path), {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Lamina", "version": version},
        "paths": paths,
        "components": {"schemas": schema.get("$defs", {})},
    }
