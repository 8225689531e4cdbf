"""The grammars requests become, checked against a real (tiny, trained) tokenizer without a model: which texts a
matcher accepts token by token, and that an accepted tool call is what the tool-call parser reads."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llguidance")

from lamina_inference_torch.grammar import GrammarError, Grammars, build_constraint
from lamina_inference_torch.tokenizer import load_tokenizer
from lamina_inference_torch.tools import call_format, parse_tool_calls

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
ANSWER_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "a", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
}


@pytest.fixture(scope="module")
def grammars(tiny):
    tokenizer = load_tokenizer(tiny.hf_folder, None)
    return Grammars(tokenizer, tokenizer.tokenizer.get_vocab_size())


def accepts(grammars: Grammars, constraint, text: str) -> bool:
    """Whether a matcher takes `text` (as the model's tokens) whole and is then complete."""
    (matcher,) = grammars.matchers(constraint, 1)
    for token in grammars.text_tokenizer.encode(text):
        if not matcher.consume_token(token):
            return False
    return matcher.is_stopped() or matcher.is_accepting()


@pytest.mark.parametrize("fmt", ["json", "hermes"])
def test_required_call_in_the_models_format_is_what_the_parser_reads(grammars, fmt):
    constraint = build_constraint(None, [WEATHER], "required", fmt)
    text = CALL if fmt == "json" else f"<tool_call>\n{CALL}\n</tool_call>"
    assert accepts(grammars, constraint, text)
    content, calls = parse_tool_calls(text, {"get_weather"})
    assert content is None and json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert not accepts(grammars, constraint, "Sure! " + text)
    assert not accepts(grammars, constraint, text.replace("Paris", "1").replace('"1"', "1"))  # city must be a string
    other = text.replace("get_weather", "launch_rockets")
    assert not accepts(grammars, constraint, other)


def test_auto_with_a_format_allows_a_call_or_the_answer(grammars):
    constraint = build_constraint(ANSWER_FORMAT, [WEATHER], "auto", "json")
    assert accepts(grammars, constraint, CALL)
    assert accepts(grammars, constraint, '{"n": 3}')
    assert not accepts(grammars, constraint, '{"n": "three"}')
    assert not accepts(grammars, constraint, "Hello")


def test_free_text_has_no_constraint():
    assert build_constraint(None, [WEATHER], "auto", "json") is None
    assert build_constraint({"type": "text"}, [], None, "json") is None
    assert build_constraint(None, [WEATHER], "none", "json") is None


def test_what_cannot_be_built_names_its_field(grammars):
    with pytest.raises(GrammarError) as caught:
        build_constraint({"type": "json_schema"}, [], None, "json")
    assert caught.value.param == "response_format.json_schema"
    bad_tool = {"type": "function", "function": {"name": "bad", "parameters": {"type": "array", "uniqueItems": True}}}
    bad = {**ANSWER_FORMAT, "json_schema": {"name": "a", "schema": {"type": "array", "uniqueItems": True}}}
    for response_format, tools, param in [
        (bad, [], "response_format.json_schema.schema"),
        (None, [WEATHER, bad_tool], "tools[1].function.parameters"),
    ]:
        constraint = build_constraint(response_format, tools, "required" if tools else None, "json")
        with pytest.raises(GrammarError) as caught:
            grammars.matchers(constraint, 1)
        assert caught.value.param == param


def test_the_format_comes_from_the_chat_template():
    assert call_format("{% for t in tools %}<tool_call>{{ t }}</tool_call>{% endfor %}") == "hermes"
    assert call_format("{{ messages }}") == "json"
    assert call_format(None) == "json"
