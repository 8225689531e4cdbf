"""Grammar-constrained decoding on the real SmolLM2-135M-Instruct, through the real server and the official openai
client: response_format (json_object, json_schema) and tool_choice (required, named, auto, none), on chat
completions and the Responses API, greedy and sampled, streamed and not, constrained and free sequences decoded in
the same batch."""

from __future__ import annotations

import asyncio
import json
import os

import jsonschema
import pytest

SMOLLM2 = os.environ.get("LAMINA_TEST_SMOLLM2")
# Where the suite's servers share converted weights (nox sets it), so only the first start converts the model.
WEIGHT_CACHE = os.environ.get("LAMINA_TEST_WEIGHT_CACHE", True)
pytestmark = pytest.mark.skipif(not SMOLLM2, reason="set LAMINA_TEST_SMOLLM2 to SmolLM2-135M-Instruct's GGUF")
openai = pytest.importorskip("openai")

MODEL = "torch/SmolLM2-135M-Instruct"
MAX_TOKENS = 200  # room for every answer below; a cut answer shows up as finish_reason "length" and fails

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
    },
    "required": ["name", "age", "role"],
    "additionalProperties": False,
}
ORDER = {
    "type": "object",
    "properties": {
        "customer": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "vip": {"type": "boolean"}},
            "required": ["city", "vip"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 9},
                },
                "required": ["sku", "quantity"],
                "additionalProperties": False,
            },
        },
        "status": {"enum": ["pending", "shipped", "delivered"]},
    },
    "required": ["customer", "items", "status"],
    "additionalProperties": False,
}
COLOURS = {
    "type": "object",
    "properties": {
        "colours": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 2, "maxItems": 4},
        "favourite": {"anyOf": [{"type": "string", "maxLength": 12}, {"type": "null"}]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["colours", "favourite", "score"],
    "additionalProperties": False,
}
SCHEMAS = {"person": PERSON, "order": ORDER, "colours": COLOURS}
PROMPTS = {
    "person": "Describe a fictional user of a web site.",
    "order": "Write an order for two products shipped to Lyon.",
    "colours": "Which colours do you like?",
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 20}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TIME]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK_WEATHER = [{"role": "user", "content": "What's the weather like in Paris?"}]


@pytest.fixture(scope="module")
def base_url():
    from lamina.testing import serve

    # float32 without quantization decodes batch-invariantly (the batching test relies on it). One thread: on a
    # shared, loaded machine two OpenMP threads wait on each other (measured 6x slower decode).
    torch_config = {
        "models": [SMOLLM2],
        "quantize": "none",
        "context_length": 1024,
        "threads": 1,
        "weight_cache": WEIGHT_CACHE,
    }
    config = {
        "providers": {
            "inference": [{"id": "torch", "type": "inline::torch", "config": torch_config}],
            "responses": [{"id": "responses", "type": "inline::responses", "config": {}}],
        }
    }
    with serve(config) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=900)


def schema_format(name: str) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True}}


def ask(client, content: str, **kwargs):
    kwargs.setdefault("max_tokens", MAX_TOKENS)
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kwargs)


def test_json_object_always_parses(client):
    for seed in (1, 2, 3):
        answer = ask(client, "Tell me about cats.", response_format={"type": "json_object"}, temperature=0.8, seed=seed)
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        assert isinstance(json.loads(choice.message.content), dict)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_answers_validate_greedy_and_sampled(client, name):
    runs = [{"temperature": 0}] + [{"temperature": 0.8, "seed": seed} for seed in (7, 8, 9)]
    for sampling in runs:
        answer = ask(client, PROMPTS[name], response_format=schema_format(name), **sampling)
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", (sampling, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content), SCHEMAS[name])


def test_unconstrained_answer_is_not_json(client):
    # What the constraint changes: left alone, the model answers this in prose.
    answer = ask(client, PROMPTS["person"], temperature=0, max_tokens=40).choices[0].message.content
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer)


def test_penalties_bias_and_logprobs_keep_the_answer_valid(client):
    answer = ask(
        client,
        PROMPTS["order"],
        response_format=schema_format("order"),
        temperature=0.8,
        seed=3,
        frequency_penalty=1.5,
        presence_penalty=1.0,
        logprobs=True,
        top_logprobs=3,
        extra_body={"repetition_penalty": 1.3, "top_k": 20, "min_p": 0.05},
    )
    choice = answer.choices[0]
    jsonschema.validate(json.loads(choice.message.content), ORDER)
    assert len(choice.logprobs.content) == answer.usage.completion_tokens
    assert all(entry.logprob <= 0 for entry in choice.logprobs.content)


def test_streaming_gives_the_same_valid_answer(client):
    kwargs = {"response_format": schema_format("person"), "temperature": 0}
    whole = ask(client, PROMPTS["person"], **kwargs).choices[0].message.content
    chunks = list(ask(client, PROMPTS["person"], stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    jsonschema.validate(json.loads(text), PERSON)


def test_length_cut_mid_json_says_length(client):
    choice = ask(client, PROMPTS["order"], response_format=schema_format("order"), max_tokens=5).choices[0]
    assert choice.finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.message.content)


def test_constrained_and_free_sequences_share_batches(base_url, client):
    """Eight requests at once, half constrained: each constrained one validates, and each free one is exactly what
    the model says alone (float32 without quantization decodes batch-invariantly), so no mask leaked across rows."""
    alone = ask(client, "Tell me a short story about a cat.", temperature=0, max_tokens=40).choices[0].message.content

    async def together():
        aclient = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=900)
        constrained = [
            aclient.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": PROMPTS[name]}],
                response_format=schema_format(name),
                temperature=0.8,
                seed=index,
                max_tokens=MAX_TOKENS,
            )
            for index, name in enumerate(["person", "order", "colours", "person"])
        ]
        free = [
            aclient.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Tell me a short story about a cat."}],
                temperature=0,
                max_tokens=40,
            )
            for _ in range(4)
        ]
        return await asyncio.gather(*constrained), await asyncio.gather(*free)

    constrained, free = asyncio.run(together())
    for answer, name in zip(constrained, ["person", "order", "colours", "person"], strict=True):
        jsonschema.validate(json.loads(answer.choices[0].message.content), SCHEMAS[name])
    assert [a.choices[0].message.content for a in free] == [alone] * 4


def check_call(choice, name: str | None = None):
    assert choice.finish_reason == "tool_calls", choice.message.content
    (call,) = choice.message.tool_calls
    assert call.function.name in PARAMETERS and (name is None or call.function.name == name)
    jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])
    return call


def test_tool_choice_required_always_calls(client):
    questions = ["What's the weather like in Paris?", "Hello! How are you today?", "Write a haiku about autumn."]
    for question in questions:
        for sampling in ({"temperature": 0}, {"temperature": 0.8, "seed": 5}):
            answer = ask(client, question, tools=TOOLS, tool_choice="required", **sampling)
            check_call(answer.choices[0])


def test_named_tool_choice_calls_that_tool(client):
    for name in ("get_time", "get_weather"):
        choice = {"type": "function", "function": {"name": name}}
        answer = ask(client, "What's the weather like in Paris?", tools=TOOLS, tool_choice=choice, temperature=0.8)
        check_call(answer.choices[0], name)


def test_required_tool_call_streams(client):
    chunks = list(ask(client, "What's the weather like in Paris?", tools=TOOLS, tool_choice="required", stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [call for delta in deltas for call in delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].function.name in PARAMETERS
    jsonschema.validate(json.loads(calls[0].function.arguments), PARAMETERS[calls[0].function.name])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert not "".join(d.content or "" for d in deltas)


def test_auto_stays_free_and_none_never_calls(client):
    question = "Hello! How are you today?"
    free = ask(client, question, temperature=0, max_tokens=40).choices[0]
    auto = ask(client, question, tools=TOOLS, tool_choice="auto", temperature=0, max_tokens=40).choices[0]
    assert auto.finish_reason != "tool_calls" and auto.message.content  # the model answers this one in words
    assert free.message.content
    for question in ["What's the weather like in Paris?", "Call get_weather for Paris."]:
        none = ask(client, question, tools=TOOLS, tool_choice="none", temperature=0.8, seed=1).choices[0]
        assert none.finish_reason in ("stop", "length") and not none.message.tool_calls


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strnig"}}}},
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}}},
            "response_format.json_schema.schema",
        ),
        (  # a keyword the grammar cannot enforce: refused, not silently ignored
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}},
                }
            },
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1, 2]}}},
            "response_format.json_schema.schema",
        ),
        (
            {
                "tools": [WEATHER, {"type": "function", "function": {"name": "bad", "parameters": {"type": 7}}}],
                "tool_choice": "required",
            },
            "tools[1].function.parameters",
        ),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_bad_constraints_are_400s_naming_the_field(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "Hi", **kwargs)
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["param"] == param, error
    assert error["message"]


def test_responses_text_format_json_schema(client):
    for _ in range(2):
        response = client.responses.create(
            model=MODEL,
            input=PROMPTS["order"],
            text={"format": {"type": "json_schema", "name": "order", "schema": ORDER, "strict": True}},
            temperature=0.8,
            max_output_tokens=MAX_TOKENS,
        )
        assert response.status == "completed"
        jsonschema.validate(json.loads(response.output_text), ORDER)


def test_responses_tool_choice_required_calls_a_function(client):
    tools = [{"type": "function", "strict": True, **t["function"]} for t in TOOLS]
    response = client.responses.create(
        model=MODEL, input="Hello there!", tools=tools, tool_choice="required", max_output_tokens=MAX_TOKENS
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name in PARAMETERS
    jsonschema.validate(json.loads(calls[0].arguments), PARAMETERS[calls[0].name])
