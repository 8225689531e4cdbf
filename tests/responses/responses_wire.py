"""Checks that what the server sends parses into the official client's own types with nothing lost, and a raw
reader of the server-sent events (to see the `event:` lines and the JSON exactly as sent)."""

from __future__ import annotations

import functools
import json
from typing import Any

import requests
from pydantic import BaseModel, TypeAdapter


@functools.cache
def adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)  # building one for the big unions (every stream event) takes a while: once


def assert_lossless(kind: Any, raw: Any) -> Any:
    """Parse `raw` (JSON as sent) as the client's type `kind`; every field must be one the client knows (none
    left in `model_extra`, no union member picked for its leniency) and dumping it back must give `raw`."""
    parsed = adapter(kind).validate_python(raw)
    _no_extras(parsed, "$")
    dumped = adapter(kind).dump_python(parsed, mode="json", by_alias=True, exclude_unset=True)
    assert dumped == raw, f"the client's {kind} does not give back what was sent:\n{dumped}\n!=\n{raw}"
    return parsed


def _no_extras(value: Any, path: str) -> None:
    if isinstance(value, BaseModel):
        assert not value.model_extra, f"{path}: {type(value).__name__} does not know {sorted(value.model_extra)}"
        for name in value.model_fields_set:
            _no_extras(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_extras(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_extras(item, f"{path}.{key}")


def stream_events(base_url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST /responses with stream=true and read the events as sent; each `event:` line must name its data's
    type."""
    events: list[dict[str, Any]] = []
    name: str | None = None
    with requests.post(f"{base_url}/responses", json={**body, "stream": True}, timeout=30, stream=True) as response:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
                if data == "[DONE]":
                    break
                event = json.loads(data)
                assert name == event["type"], (name, event)
                events.append(event)
                name = None
    return events
