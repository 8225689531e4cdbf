"""Finding tool calls in generated text: Llama 3 JSON (optionally after <|python_tag|>) and Hermes/Qwen tags."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

PYTHON_TAG = "<|python_tag|>"
_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
# What a tool-call answer can start with; until the text rules these out, a stream holds it back.
CALL_OPENINGS = ("{", "[", "<tool_call>", PYTHON_TAG)


def call_format(chat_template: str | None) -> str:
    """How this model writes a tool call, from its chat template: "hermes" (<tool_call> tags, Qwen/Hermes) or
    "json" (a bare {"name", "arguments"} object, Llama 3's form; also for templates that show no format)."""
    return "hermes" if chat_template and "<tool_call>" in chat_template else "json"


def may_open_tool_call(text: str) -> bool:
    """Could `text` (the start of an answer) still turn out to be a tool call?"""
    head = text.lstrip()
    return not head or any(head.startswith(opening) or opening.startswith(head) for opening in CALL_OPENINGS)


def parse_tool_calls(text: str, known_names: set[str] | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """Split model output into (content, OpenAI tool_calls); no calls found means ([text], [])."""
    if "<tool_call>" in text:
        before = text[: text.index("<tool_call>")].strip()
        calls = [_call(json.loads(body)) for body in _HERMES_CALL.findall(text) if _is_json_object(body)]
        calls = [c for c in calls if c is not None and _known(c, known_names)]
        return (before or None, calls) if calls else (text, [])
    body = text.strip()
    if body.startswith(PYTHON_TAG):
        body = body[len(PYTHON_TAG) :].strip()
    candidates = _json_values(body)
    if candidates is None:
        return text, []
    calls = [_call(value) for value in candidates]
    if not calls or any(c is None or not _known(c, known_names) for c in calls):
        return text, []
    return None, calls  # type: ignore[return-value]


def _json_values(body: str) -> list[Any] | None:
    """One JSON object, a JSON list of objects, or objects separated by ';' (Llama 3.2 writes those)."""
    try:
        value = json.loads(body)
        return value if isinstance(value, list) else [value]
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    values, index = [], 0
    while index < len(body):
        try:
            value, index = decoder.raw_decode(body, index)
        except json.JSONDecodeError:
            return None
        values.append(value)
        while index < len(body) and body[index] in " \t\r\n;":
            index += 1
    return values or None


def _is_json_object(body: str) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except json.JSONDecodeError:
        return False


def _known(call: dict[str, Any], known_names: set[str] | None) -> bool:
    return known_names is None or call["function"]["name"] in known_names


def _call(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": value["name"], "arguments": arguments},
    }
