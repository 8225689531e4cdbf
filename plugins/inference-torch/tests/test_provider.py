"""The provider object on the tiny random model: response shapes, errors, cancellation, quantized weights."""

from __future__ import annotations

import asyncio

import pytest

torch = pytest.importorskip("torch")

from lamina.apis.inference.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest  # noqa: E402
from lamina.errors import LaminaError  # noqa: E402
from lamina_inference_torch.config import TorchConfig  # noqa: E402
from lamina_inference_torch.model import Decoder, resolve_quantization  # noqa: E402
from lamina_inference_torch.provider import create_provider  # noqa: E402
from lamina_inference_torch.weights import load_model  # noqa: E402

MODEL = "tiny-llama"


@pytest.fixture
async def provider(tiny):
    config = TorchConfig(models=[str(tiny.hf_folder)], quantize="none", context_length=64, max_batch=2, threads=1)
    provider = await create_provider(config)
    yield provider
    await provider.close()


def chat(**kwargs) -> ChatCompletionRequest:
    return ChatCompletionRequest(model=MODEL, messages=[{"role": "user", "content": "The quick brown fox"}], **kwargs)


async def test_chat_and_completion_shapes(provider):
    assert [m.id for m in await provider.list_models()] == [MODEL]
    answer = await provider.chat_completion(chat(max_tokens=6, temperature=0, logprobs=True, top_logprobs=2))
    choice = answer["choices"][0]
    assert answer["object"] == "chat.completion" and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in {"stop", "length"}
    assert len(choice["logprobs"]["content"]) == answer["usage"]["completion_tokens"] <= 6
    completion = await provider.completion(
        CompletionRequest(model=MODEL, prompt=["Paris is", "def add"], max_tokens=4, n=2, logprobs=1, echo=True)
    )
    assert [c["index"] for c in completion["choices"]] == [0, 1, 2, 3]
    assert completion["choices"][2]["text"].startswith("def add")
    assert all(len(c["logprobs"]["tokens"]) <= 4 for c in completion["choices"])


async def test_stream_chunks_and_usage(provider):
    stream = await provider.chat_completion(chat(max_tokens=8, stream=True, stream_options={"include_usage": True}))
    chunks = [chunk async for chunk in stream]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] in {"stop", "length"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 8


async def test_errors_raise_before_any_output(provider):
    with pytest.raises(LaminaError) as raised:
        await provider.chat_completion(
            ChatCompletionRequest(model=MODEL, messages=[{"role": "user", "content": "fox " * 80}], stream=True)
        )
    assert raised.value.status == 400 and "context" in raised.value.message
    with pytest.raises(LaminaError, match="top_k"):
        await provider.chat_completion(chat(top_k=-2))
    with pytest.raises(LaminaError, match="embeddings"):
        await provider.embeddings(EmbeddingRequest(model=MODEL, input="hi"))
    with pytest.raises(LaminaError) as raised:
        await provider.chat_completion(
            ChatCompletionRequest(model="other", messages=[{"role": "user", "content": "x"}])
        )
    assert raised.value.status == 404


async def test_abandoned_stream_frees_its_slot(provider):
    engine = provider.models[MODEL].engine
    stream = await provider.chat_completion(chat(max_tokens=35, stream=True, temperature=1.0))
    await anext(stream)
    await anext(stream)
    await stream.aclose()
    for _ in range(200):
        if not any(engine._slots):
            break
        await asyncio.sleep(0.01)
    assert not any(engine._slots)


@pytest.mark.parametrize(
    ("quantize", "fp16_above_rows"),
    [("int8", None), ("int8", 0), ("int4", None), ("int4", 0)],
    ids=["int8", "int8-fp16-copy", "int4", "int4-fp16-copy"],
)
def test_quantized_weights_stay_close_to_float32(tiny, quantize, fp16_above_rows):
    ids = list(range(5, 40))
    # int4 is meant for weights that already are 4-bit in groups of 32 (GGUF Q4_0/Q4_1): give it such weights.
    prepare = _as_q4_1 if quantize == "int4" else dict
    exact_decoder = Decoder.from_weights(**_decoder_args(tiny, prepare))
    quantized = Decoder.from_weights(**_decoder_args(tiny, prepare), quantize=quantize, fp16_above_rows=fp16_above_rows)
    exact = exact_decoder.prefill(0, ids, all_logits=True)
    # Prefill expands the int8 weights (or runs on the float16 copy); decode goes through the weight-only kernel,
    # or through the float16 copy when the batch has more rows than fp16_above_rows (0: always): check both paths.
    logits = [quantized.prefill(0, ids[:-6], all_logits=True)]
    for position in range(len(ids) - 6, len(ids)):
        logits.append(quantized.decode(torch.tensor([ids[position]]), torch.tensor([position])))
    logits = torch.cat(logits)
    kl = torch.nn.functional.kl_div(logits.log_softmax(-1), exact.log_softmax(-1), log_target=True, reduction="none")
    assert kl.sum(-1).max() < 0.02
    # The float16 copy is only as far from float32 as float16 rounding: much closer than int8.
    if fp16_above_rows == 0:
        assert kl.sum(-1).max() < 1e-4


def test_auto_quantization_is_int4_for_4_bit_ggufs_only():
    assert resolve_quantization("auto", {"general.file_type": 3}) == "int4"  # MOSTLY_Q4_1, as SmolLM2's file
    assert resolve_quantization("auto", {"general.file_type": 2}) == "int4"  # MOSTLY_Q4_0
    assert resolve_quantization("auto", {"general.file_type": 7}) == "int8"  # MOSTLY_Q8_0
    assert resolve_quantization("auto", {}) == "int8"
    assert resolve_quantization("auto", None) == "int8"  # a safetensors folder
    assert resolve_quantization("none", {"general.file_type": 3}) == "none"


def test_fp16_copy_serves_batches_above_the_threshold(tiny):
    """Rows past the threshold take the float16 path, which must agree with the int8 path on the same prompts."""
    decoder = Decoder.from_weights(**{**_decoder_args(tiny), "max_batch": 4}, quantize="int8", fp16_above_rows=2)
    ids = list(range(5, 20))
    for slot in range(4):
        decoder.prefill(slot, ids[:-1])
    tokens, positions = torch.tensor([ids[-1]] * 4), torch.tensor([len(ids) - 1] * 4)
    four_rows = decoder.decode(tokens, positions)  # 4 > 2 rows: float16 copy
    two_rows = decoder.decode(tokens[:2], positions[:2])  # int8 kernel
    assert not torch.equal(four_rows[:2], two_rows)  # really two different paths
    kl = torch.nn.functional.kl_div(
        four_rows[:2].log_softmax(-1), two_rows.log_softmax(-1), log_target=True, reduction="none"
    )
    assert kl.sum(-1).max() < 0.02
    # Rows stay independent: the same prompt in another row gets the same logits, up to float16 rounding (the
    # kernel may take another vector path for another row, so bit equality is not promised).
    assert torch.allclose(four_rows[0], four_rows[3], rtol=0, atol=2e-2), (four_rows[0] - four_rows[3]).abs().max()


def _decoder_args(tiny, prepare=dict) -> dict:
    loaded = load_model(tiny.hf_folder)
    return {"config": loaded.config, "weights": prepare(loaded.weights), "context_length": 64, "max_batch": 1}


def _as_q4_1(weights: dict) -> dict:
    """The block weights rounded as GGUF Q4_1 does: 16 levels between each 32-weight group's min and max."""
    rounded = dict(weights)
    for name, weight in weights.items():
        if name.endswith("_proj.weight"):
            groups = weight.float().reshape(weight.shape[0], -1, 32)
            low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
            step = (high - low) / 15
            rounded[name] = (torch.round((groups - low) / step) * step + low).reshape(weight.shape)
    return rounded


class CannedEngine:
    """Stands in for the engine: every sequence 'generates' the canned text, a few characters per token."""

    context_length = 64

    def __init__(self, text: str) -> None:
        self.text = text

    def submit(self, sequence) -> None:
        from lamina_inference_torch.engine import Finished, TextDelta
        from lamina_inference_torch.sampling import TokenChoice

        pieces = [self.text[i : i + 3] for i in range(0, len(self.text), 3)]
        for piece in pieces:
            sequence.emit(TextDelta(piece, [TokenChoice(0)]))
        sequence.done = True
        sequence.emit(Finished("stop", len(sequence.prompt), len(pieces)))

    def cancel(self, sequence) -> None:
        pass


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    "output",
    [
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    ],
)
async def test_tool_calls_streamed_and_not(tiny, output):
    from lamina_inference_torch.provider import ServedModel, TorchProvider
    from lamina_inference_torch.tokenizer import load_tokenizer

    served = ServedModel(MODEL, tiny.hf_folder, load_tokenizer(tiny.hf_folder, None), CannedEngine(output))
    provider = TorchProvider({MODEL: served}, TorchConfig(models=[MODEL]))
    answer = await provider.chat_completion(chat(tools=TOOLS))
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    chunks = [c async for c in await provider.chat_completion(chat(tools=TOOLS, stream=True))]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert not any(d.get("content") for d in deltas)
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "get_weather")]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_plain_text_with_tools_offered_streams_as_text(tiny):
    from lamina_inference_torch.provider import ServedModel, TorchProvider
    from lamina_inference_torch.tokenizer import load_tokenizer

    text = "It is sunny in Paris."
    served = ServedModel(MODEL, tiny.hf_folder, load_tokenizer(tiny.hf_folder, None), CannedEngine(text))
    chunks = [
        c
        async for c in await TorchProvider({MODEL: served}, TorchConfig(models=[MODEL])).chat_completion(
            chat(tools=TOOLS, stream=True)
        )
    ]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_more_requests_than_slots_queue_and_all_finish(provider):
    requests = [chat(max_tokens=6, temperature=0.9, seed=i) for i in range(5)]  # the engine has 2 slots
    answers = await asyncio.gather(*(provider.chat_completion(r) for r in requests))
    assert all(a["choices"][0]["finish_reason"] in {"stop", "length"} for a in answers)
    again = await provider.chat_completion(chat(max_tokens=6, temperature=0.9, seed=3))
    assert again["choices"][0]["message"]["content"] == answers[3]["choices"][0]["message"]["content"]
