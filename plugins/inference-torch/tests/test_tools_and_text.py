"""Pure-Python pieces: tool-call parsing on canned model outputs, stop-sequence hold-back, chat templates."""

from __future__ import annotations

import json
import sys

import pytest
from lamina_inference_torch.tools import may_open_tool_call, parse_tool_calls

WEATHER = {"city": "Paris", "unit": "celsius"}


@pytest.mark.parametrize(
    "output",
    [
        '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
        '<|python_tag|>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
        '  {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"celsius\\"}"}\n',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>',
    ],
)
def test_single_tool_call_formats(output):
    content, calls = parse_tool_calls(output, {"get_weather"})
    assert content is None
    assert len(calls) == 1
    call = calls[0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == WEATHER


def test_several_calls_and_text_before_hermes_calls():
    output = (
        "Let me check both.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n'
        '{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'
    )
    content, calls = parse_tool_calls(output, {"get_weather", "get_time"})
    assert content == "Let me check both."
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    llama = '{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}'
    assert [c["function"]["name"] for c in parse_tool_calls(llama, None)[1]] == ["get_weather", "get_time"]


@pytest.mark.parametrize(
    "output",
    [
        "The weather in Paris is sunny.",
        '{"city": "Paris"}',  # JSON, but not a call
        '{"name": "launch_rockets", "parameters": {}}',  # a tool the request did not offer
        '{"name": "get_weather", "parameters": {"city": ',  # cut off
        "<tool_call>not json</tool_call>",
    ],
)
def test_text_that_is_not_a_call_stays_text(output):
    assert parse_tool_calls(output, {"get_weather"}) == (output, [])


def test_streams_hold_back_only_what_may_be_a_call():
    assert may_open_tool_call("")
    assert may_open_tool_call("  ")
    assert may_open_tool_call("<tool")
    assert may_open_tool_call('{"name"')
    assert may_open_tool_call("<|python_tag|>{")
    assert not may_open_tool_call("The answer")
    assert not may_open_tool_call("<b>")


def test_stop_hold_back():
    pytest.importorskip("torch")
    from lamina_inference_torch.engine import _first_stop, _stop_prefix_length

    assert _stop_prefix_length("Hello wor", ["world"]) == 3
    assert _stop_prefix_length("Hello", ["world"]) == 0
    assert _stop_prefix_length("ab", ["abc", "bx"]) == 2
    assert _first_stop("say STOP now END", ["END", "STOP"]) == 4
    assert _first_stop("nothing", ["END"]) is None


def test_chat_template_renders_like_transformers_with_tools():
    from lamina_inference_torch.tokenizer import render_chat_template

    template = (
        "{%- if tools %}{{ 'Tools: ' + (tools | tojson) + '\n' }}{%- endif %}"
        "{% for m in messages %}{% if m.role == 'assistant' and m.tool_calls %}"
        "{{ m.tool_calls[0].function.arguments | tojson }}"
        "{% else %}{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    text = render_chat_template(template, [{"role": "user", "content": "héllo"}], tools, {})
    assert (
        text
        == 'Tools: [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]\nuser: héllo\nassistant:'
    )
    with pytest.raises(ValueError, match="nope"):
        render_chat_template("{{ raise_exception('nope') }}", [], None, {})


def test_entry_point_module_does_not_import_torch():
    import subprocess

    code = "import sys, lamina_inference_torch; sys.exit(1 if 'torch' in sys.modules or 'numpy' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
