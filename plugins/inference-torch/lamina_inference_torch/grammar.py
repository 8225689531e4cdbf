"""Grammar-constrained decoding with llguidance.

A request's `response_format` (json_object, json_schema) and a `tool_choice` that demands a call (`required`, or a
named function) become one grammar; each constrained sequence gets its own matcher, and before every sampled token
the matcher's mask sends the logits of the tokens the grammar forbids to -inf. The grammar is compiled against the
model's own tokenizer (the `tokenizers` object we load from tokenizer.json or build from GGUF metadata), so GGUF
models are constrained exactly like Hugging Face folders.
"""

from __future__ import annotations

import collections
import json
import threading
from dataclasses import dataclass
from typing import Any

import llguidance
import numpy as np

from lamina_inference_torch.tokenizer import TextTokenizer

# One fixed separator style and no free whitespace: with flexible whitespace a small model can fill an object with
# newlines until max_tokens runs out. ", " and ": " are what models write when unconstrained.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
_COMPILED_KEPT = 64  # compiled grammars kept per model, so a schema sent again skips compilation


class GrammarError(ValueError):
    """A grammar that does not compile; `param` names the request field it came from."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Constraint:
    """What a request's output must match: a Lark grammar (llguidance's dialect, JSON schemas inlined with %json)
    and the request fields it was built from, each with the grammar piece it contributed (to blame the right one
    when compilation fails)."""

    lark: str
    pieces: list[tuple[str, str]]  # (request field, Lark grammar of that field alone)


def json_rule(schema: dict[str, Any]) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": JSON_OPTIONS})


def answer_schema(response_format: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The JSON schema a `response_format` asks for and the field holding it; None for plain text.
    Raises GrammarError for a malformed one."""
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return ANY_OBJECT, "response_format"
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise GrammarError(
            "response_format.json_schema must be an object with a `schema`", "response_format.json_schema"
        )
    schema = spec.get("schema", ANY_OBJECT)
    if not isinstance(schema, dict):
        raise GrammarError("response_format.json_schema.schema must be a JSON schema object", _SCHEMA_PARAM)
    return schema, _SCHEMA_PARAM


_SCHEMA_PARAM = "response_format.json_schema.schema"


def call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    """A call of `tool` as the JSON object tools.parse_tool_calls reads: {"name": ..., "arguments": {...}}."""
    function = tool["function"]
    parameters = function.get("parameters") or ANY_OBJECT
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def build_constraint(
    response_format: dict[str, Any] | None,
    tools: list[dict[str, Any]],
    tool_choice: Any,
    call_format: str,
) -> Constraint | None:
    """The grammar a chat request's output must match, or None when it is free text.

    `tool_choice` "required" or {"type": "function", "function": {"name": X}}: exactly one call (of X), in the
    model's format (`call_format`: "json" for a bare object, "hermes" for <tool_call> tags). "auto" with a
    response_format: either a call or the answer format. "none" or no tools: the answer format alone.
    """
    answer = answer_schema(response_format) if response_format else None
    calls: list[tuple[str, dict[str, Any]]] = []
    forced = False
    if tools and tool_choice != "none":
        offered = list(enumerate(tools))
        if isinstance(tool_choice, dict):
            name = (tool_choice.get("function") or {}).get("name")
            offered = [(i, t) for i, t in offered if t["function"]["name"] == name]
            if not offered:
                raise GrammarError(f"tool_choice names function {name!r}, which is not among `tools`", "tool_choice")
            forced = True
        elif tool_choice == "required":
            forced = True
        calls = [(f"tools[{i}].function.parameters", call_schema(t)) for i, t in offered]
    elif tool_choice == "required" or isinstance(tool_choice, dict):
        raise GrammarError("tool_choice requires a call, but the request offers no `tools`", "tool_choice")
    if not forced and answer is None:
        return None
    pieces: list[tuple[str, str]] = []
    rules: list[str] = []
    if calls:
        schema = calls[0][1] if len(calls) == 1 else {"anyOf": [s for _, s in calls]}
        call = json_rule(schema)
        if call_format == "hermes":
            call = f'"<tool_call>\\n" {call} "\\n</tool_call>"'
        rules.append(f"call: {call}")
        pieces += [(param, f"start: {json_rule(s)}") for param, s in calls]
    if answer is not None and not forced:
        rules.append(f"answer: {json_rule(answer[0])}")
        pieces.append((answer[1], f"start: {json_rule(answer[0])}"))
    alternatives = " | ".join(rule.split(":", 1)[0] for rule in rules)
    return Constraint("\n".join([f"start: {alternatives}", *rules]), pieces)


class Grammars:
    """A served model's grammar machinery: the llguidance tokenizer (built on first use, ~1 s for a 49k vocabulary)
    and the grammars compiled lately, kept so a schema sent again costs a copy, not a compilation."""

    def __init__(self, tokenizer: TextTokenizer, vocab_size: int) -> None:
        self.text_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._compiled: collections.OrderedDict[str, llguidance.LLMatcher] = collections.OrderedDict()
        self._lock = threading.Lock()

    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llguidance.LLTokenizer(
                    self.text_tokenizer.tokenizer.to_str(),
                    n_vocab=self.vocab_size,
                    eos_token=sorted(self.text_tokenizer.stop_token_ids),
                )
            return self._tokenizer

    def matchers(self, constraint: Constraint, count: int) -> list[llguidance.LLMatcher]:
        """`count` fresh matchers for `constraint`. Blocking (compiles; llguidance drops the GIL meanwhile).
        Raises GrammarError naming the request field whose schema does not compile."""
        tokenizer = self.tokenizer()
        with self._lock:
            compiled = self._compiled.get(constraint.lark)
            if compiled is not None:
                self._compiled.move_to_end(constraint.lark)
        if compiled is None:
            compiled = llguidance.LLMatcher(
                tokenizer, llguidance.LLMatcher.grammar_from_lark(constraint.lark), log_level=0
            )
            if compiled.is_error():
                raise _blame(constraint, tokenizer, compiled.get_error())
            with self._lock:
                self._compiled[constraint.lark] = compiled
                while len(self._compiled) > _COMPILED_KEPT:
                    self._compiled.popitem(last=False)
        with self._lock:  # the kept matcher is never advanced, only copied
            return [compiled.deep_copy() for _ in range(count)]


def _blame(constraint: Constraint, tokenizer: llguidance.LLTokenizer, error: str) -> GrammarError:
    for param, lark in constraint.pieces:
        piece_error = llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_lark(lark), tokenizer)
        if piece_error and not piece_error.startswith("WARNING"):
            return GrammarError(f"{param} is not a schema we can enforce: {_short(piece_error)}", param)
    param = constraint.pieces[0][0] if constraint.pieces else "response_format"
    return GrammarError(f"{param} is not a schema we can enforce: {_short(error)}", param)


def _short(error: str) -> str:
    return error.strip().splitlines()[0][:500] if error.strip() else "invalid grammar"


def allowed_tokens(matcher: llguidance.LLMatcher, vocab_size: int) -> np.ndarray:
    """The matcher's next-token mask as a bool array over the vocabulary."""
    bitmask = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
    return np.unpackbits(bitmask, count=vocab_size, bitorder="little").view(np.bool_)
