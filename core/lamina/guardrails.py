"""Guardrails on text generation: input checked before the provider runs, output checked as it is produced.

The resolver builds one `GuardrailChain` per stack from every `register_guardrails` hook and hands it to the
routers that generate text (inference: chat completions and completions), which call `chain.chat(...)` /
`chain.completion(...)` around their provider. A guardrail only judges text (`check_input`, `check_output`); the
chain does the rest: errors, refusals or redaction for a bad input, and for a bad output a cut stream ending with
`finish_reason` `content_filter`.

Streamed output is judged on the text accumulated so far, at least every `output_check_chars` characters and at
sentence ends, and once more at the end. With `output_hold_back` (the default) chunks wait until the text they
carry has been judged, so a client never sees text no check has passed; the price is latency: text arrives in
bursts, one check behind. Without it chunks pass at once and the stream is cut at the next check, so up to
`output_check_chars` characters of a bad answer may reach the client before the cut.

Guardrails that ask a model themselves (Llama Guard) call the inference router with `guarded=False`, so their own
calls are not guarded in turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from lamina.apis.inference.provider import chat_choice, chat_chunk, chat_completion, new_id, text_completion
from lamina.apis.inference.types import ChatCompletionRequest, ChatMessage, CompletionRequest
from lamina.errors import LaminaError

log = logging.getLogger("lamina")
Result = dict[str, Any] | AsyncIterator[dict[str, Any]]
SENTENCE_ENDS = frozenset(".!?\n")
MIN_SENTENCE_CHARS = 20  # a sentence end triggers a check only once this much text is unchecked


class GuardrailViolation(BaseModel):
    """What a guardrail found wrong: shown to the client in the error, and kept for logs."""

    guardrail: str
    message: str
    categories: list[str] = []
    redacted: str | None = None  # the judged message with findings masked, when the guardrail can


class Guardrail:
    """Base class of guardrails; override `check_input` and/or `check_output` and the options you need."""

    name = "guardrail"
    on_input_violation: Literal["error", "refuse", "redact"] = "error"
    refusal_message = "Sorry, I can't help with that."
    output_check_chars = 200
    output_hold_back = True

    def applies_to(self, model: str) -> bool:
        return True

    async def check_input(self, messages: list[ChatMessage]) -> GuardrailViolation | None:
        """Judge the last message, in the context of those before (system messages are left out)."""
        return None

    async def check_output(self, messages: list[ChatMessage], text: str) -> GuardrailViolation | None:
        """Judge `text`, the answer so far, in the context of the conversation that asked for it."""
        return None

    @property
    def checks_output(self) -> bool:
        return type(self).check_output is not Guardrail.check_output


@dataclass(frozen=True)
class _Shape:
    """Where an answer of one kind (chat completion or text completion) keeps its text, and how to refuse."""

    answer_text: Callable[[dict[str, Any]], Any]
    chunk_text: Callable[[dict[str, Any]], Any]
    refuse_choice: Callable[[dict[str, Any], str], None]
    refusal: Callable[[str, bool, str], Result]
    cut: Callable[[dict[str, Any], list[int]], dict[str, Any]]
    param: str  # the request field that holds the judged input, named in a 400


def _refuse_chat_choice(choice: dict[str, Any], message: str) -> None:
    reply = choice.setdefault("message", {})
    reply["content"] = message
    reply.pop("tool_calls", None)
    choice["finish_reason"] = "content_filter"


def _chat_refusal(model: str, stream: bool, message: str) -> Result:
    if not stream:
        return chat_completion(model, [chat_choice(0, message, "content_filter")], None)

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        chunk_id, created = new_id("chatcmpl"), int(time.time())
        delta = {"role": "assistant", "content": message}
        yield chat_chunk(chunk_id, model, created, [{"index": 0, "delta": delta, "finish_reason": None}])
        yield chat_chunk(chunk_id, model, created, [{"index": 0, "delta": {}, "finish_reason": "content_filter"}])

    return chunks()


def _chat_cut(last: dict[str, Any], indexes: list[int]) -> dict[str, Any]:
    choices = [{"index": i, "delta": {}, "finish_reason": "content_filter"} for i in indexes]
    return chat_chunk(last.get("id", new_id("chatcmpl")), last.get("model", ""), last.get("created", 0), choices)


def _refuse_text_choice(choice: dict[str, Any], message: str) -> None:
    choice["text"] = message
    choice["finish_reason"] = "content_filter"


def _text_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}


def _text_refusal(model: str, stream: bool, message: str) -> Result:
    if not stream:
        return text_completion(model, [_text_choice(0, message, "content_filter")], None)

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        answer = text_completion(model, [_text_choice(0, message, None)], None)
        yield answer
        yield {**answer, "choices": [_text_choice(0, "", "content_filter")]}

    return chunks()


def _text_cut(last: dict[str, Any], indexes: list[int]) -> dict[str, Any]:
    return {
        "id": last.get("id", new_id("cmpl")),
        "object": "text_completion",
        "created": last.get("created", 0),
        "model": last.get("model", ""),
        "choices": [_text_choice(i, "", "content_filter") for i in indexes],
    }


CHAT = _Shape(
    answer_text=lambda choice: (choice.get("message") or {}).get("content"),
    chunk_text=lambda choice: (choice.get("delta") or {}).get("content"),
    refuse_choice=_refuse_chat_choice,
    refusal=_chat_refusal,
    cut=_chat_cut,
    param="messages",
)
TEXT = _Shape(
    answer_text=lambda choice: choice.get("text"),
    chunk_text=lambda choice: choice.get("text"),
    refuse_choice=_refuse_text_choice,
    refusal=_text_refusal,
    cut=_text_cut,
    param="prompt",
)


class GuardrailChain:
    """Every guardrail of a stack, run around each text-generating call of the routers it is handed to."""

    def __init__(self, guardrails: list[Guardrail] | None = None) -> None:
        self.guardrails: list[Guardrail] = list(guardrails or [])

    def install(self, guardrails: list[Guardrail]) -> None:
        self.guardrails.extend(guardrails)

    async def chat(
        self, request: ChatCompletionRequest, call: Callable[[ChatCompletionRequest], Awaitable[Result]]
    ) -> Result:
        active = [g for g in self.guardrails if g.applies_to(request.model)]
        if not active:
            return await call(request)
        context = [m for m in request.messages if m.role not in ("system", "developer")]

        return await _guard(active, request, bool(request.stream), context, _redact_chat, call, CHAT)

    async def completion(
        self, request: CompletionRequest, call: Callable[[CompletionRequest], Awaitable[Result]]
    ) -> Result:
        active = [g for g in self.guardrails if g.applies_to(request.model)]
        if not active:
            return await call(request)
        prompt = request.prompt
        # Token-id prompts carry no text to judge; their output still is.
        texts = [prompt] if isinstance(prompt, str) else [p for p in prompt if isinstance(p, str)]
        context = [ChatMessage(role="user", content="\n".join(texts))] if texts else []

        return await _guard(active, request, bool(request.stream), context, _redact_completion, call, TEXT)


def _redact_chat(request: ChatCompletionRequest, text: str) -> ChatCompletionRequest:
    messages = list(request.messages)
    messages[-1] = messages[-1].model_copy(update={"content": text})
    return request.model_copy(update={"messages": messages})


def _redact_completion(request: CompletionRequest, text: str) -> CompletionRequest:
    if not isinstance(request.prompt, str):
        raise input_error(
            GuardrailViolation(guardrail="redaction", message="only a string prompt can be redacted"), "prompt"
        )
    return request.model_copy(update={"prompt": text})


async def _guard(
    active: list[Guardrail],
    request: Any,
    stream: bool,
    context: list[ChatMessage],
    redact: Callable[[Any, str], Any],
    call: Callable[[Any], Awaitable[Result]],
    shape: _Shape,
) -> Result:
    model = request.model
    if context:
        verdicts = await asyncio.gather(*(g.check_input(context) for g in active))
        redacted = False
        for guardrail, violation in zip(active, verdicts, strict=True):
            if violation is not None and redacted and guardrail.on_input_violation == "redact":
                violation = await guardrail.check_input(context)  # judge the text an earlier one masked
            if violation is None:
                continue
            log.info("guardrail %s blocked the input of a request: %s", guardrail.name, violation.categories)
            if guardrail.on_input_violation == "redact" and violation.redacted is not None:
                request = redact(request, violation.redacted)
                context = [*context[:-1], context[-1].model_copy(update={"content": violation.redacted})]
                redacted = True
            elif guardrail.on_input_violation == "refuse":
                return shape.refusal(model, stream, guardrail.refusal_message)
            else:
                raise input_error(violation, shape.param)
    result = await call(request)
    for guardrail in active:
        if guardrail.checks_output:
            result = (
                await _guard_answer(guardrail, context, result, shape)
                if isinstance(result, dict)
                else _guard_stream(guardrail, context, result, shape)
            )
    return result


def input_error(violation: GuardrailViolation, param: str = "messages") -> LaminaError:
    categories = f" ({', '.join(violation.categories)})" if violation.categories else ""
    return LaminaError(
        f"the input was blocked by guardrail '{violation.guardrail}'{categories}: {violation.message}",
        status=400,
        param=param,
        code="content_policy_violation",
    )


async def _guard_answer(
    guardrail: Guardrail, context: list[ChatMessage], answer: dict[str, Any], shape: _Shape
) -> dict[str, Any]:
    for choice in answer.get("choices") or []:
        text = shape.answer_text(choice)
        if isinstance(text, str) and text and (violation := await guardrail.check_output(context, text)):
            log.info("guardrail %s filtered an answer: %s", guardrail.name, violation.categories)
            shape.refuse_choice(choice, guardrail.refusal_message)
    return answer


async def _guard_stream(
    guardrail: Guardrail, context: list[ChatMessage], chunks: AsyncIterator[dict[str, Any]], shape: _Shape
) -> AsyncIterator[dict[str, Any]]:
    texts: dict[int, str] = {}
    checked: dict[int, int] = {}  # per choice: how much of its text a check has passed
    held: list[dict[str, Any]] = []
    last: dict[str, Any] = {}

    async def passes(indexes: list[int]) -> bool:
        for index in indexes:
            violation = await guardrail.check_output(context, texts[index])
            checked[index] = len(texts[index])
            if violation is not None:
                log.info("guardrail %s cut a streamed answer: %s", guardrail.name, violation.categories)
                return False
        return True

    def cut() -> dict[str, Any]:
        # Every choice ends here: the stream stops, so none can finish later.
        return shape.cut(last, sorted(texts) or [0])

    async with aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            last = chunk
            due: list[int] = []
            for choice in chunk.get("choices") or []:
                index = choice.get("index", 0)
                delta = shape.chunk_text(choice) or ""
                text = texts[index] = texts.get(index, "") + delta
                unchecked = len(text) - checked.get(index, 0)
                ends_sentence = unchecked >= MIN_SENTENCE_CHARS and not SENTENCE_ENDS.isdisjoint(delta)
                finishing = choice.get("finish_reason") is not None and unchecked > 0
                if unchecked >= guardrail.output_check_chars or ends_sentence or finishing:
                    due.append(index)
            if not due:
                if guardrail.output_hold_back:
                    held.append(chunk)
                else:
                    yield chunk
                continue
            finishing_chunk = any(c.get("finish_reason") for c in chunk.get("choices") or [])
            if not guardrail.output_hold_back and not finishing_chunk:
                yield chunk  # optimistic: the client sees it now; a bad verdict cuts what follows
            if not await passes(due):
                yield cut()
                return
            if guardrail.output_hold_back:
                for waiting in held:
                    yield waiting
                held.clear()
                yield chunk
            elif finishing_chunk:
                yield chunk
        rest = [i for i, text in texts.items() if len(text) > checked.get(i, 0)]
        if rest and not await passes(rest):
            yield cut()
            return
        for waiting in held:
            yield waiting
