"""Guardrails on chat completions: input checked before the provider runs, output checked as it is produced.

The inference router calls `InferenceRouter.chat_guard(request, call)` when the safety API installed one;
`GuardrailChain` is that guard. A guardrail only judges text (`check_input`, `check_output`); the chain does the
rest: errors or refusals for a bad input, and for a bad output a cut stream ending with `finish_reason`
`content_filter`.

Streamed output is judged on the text accumulated so far, at least every `output_check_chars` characters and at
sentence ends, and once more at the end. With `output_hold_back` (the default) chunks wait until the text they
carry has been judged, so a client never sees text no check has passed; the price is latency: text arrives in
bursts, one check behind. Without it chunks pass at once and the stream is cut at the next check, so up to
`output_check_chars` characters of a bad answer may reach the client before the cut.
"""

from __future__ import annotations

import asyncio
import contextvars
import fnmatch
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from lamina.apis.inference import ChatCompletionRequest, ChatMessage, chat_choice, chat_chunk, chat_completion, new_id
from lamina.errors import LaminaError
from lamina.specs import GuardrailSpec

if TYPE_CHECKING:
    from lamina.config import GuardrailConfig
    from lamina.resolver import Stack

log = logging.getLogger("lamina")
Result = dict[str, Any] | AsyncIterator[dict[str, Any]]
SENTENCE_ENDS = frozenset(".!?\n")
MIN_SENTENCE_CHARS = 20  # a sentence end triggers a check only once this much text is unchecked

# Set while guardrails run, so chat completions a shield makes itself (Llama Guard asking its model) are not
# guarded in turn, which would recurse.
_checking: contextvars.ContextVar[bool] = contextvars.ContextVar("lamina_guardrail_checking", default=False)


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


class GuardrailChain:
    """The guard the safety API installs on the inference router: runs every guardrail that applies."""

    def __init__(self, guardrails: list[Guardrail]) -> None:
        self.guardrails = guardrails

    async def __call__(
        self, request: ChatCompletionRequest, call: Callable[[ChatCompletionRequest], Awaitable[Result]]
    ) -> Result:
        active = [g for g in self.guardrails if g.applies_to(request.model)]
        if not active or _checking.get():
            return await call(request)
        context = [m for m in request.messages if m.role not in ("system", "developer")]
        if context:
            token = _checking.set(True)
            try:
                verdicts = await asyncio.gather(*(g.check_input(context) for g in active))
            finally:
                _checking.reset(token)
            redacted = False
            for guardrail, violation in zip(active, verdicts, strict=True):
                if violation is not None and redacted and guardrail.on_input_violation == "redact":
                    violation = await _judge_input(guardrail, context)  # judge the text an earlier one masked
                if violation is None:
                    continue
                log.info(
                    "guardrail %s blocked the input of a chat completion: %s", guardrail.name, violation.categories
                )
                if guardrail.on_input_violation == "redact" and violation.redacted is not None:
                    request = _redact_last(request, violation.redacted)
                    context = [*context[:-1], context[-1].model_copy(update={"content": violation.redacted})]
                    redacted = True
                elif guardrail.on_input_violation == "refuse":
                    return _refusal(request, guardrail.refusal_message)
                else:
                    raise input_error(violation)
        result = await call(request)
        for guardrail in active:
            if guardrail.checks_output:
                result = (
                    await _guard_answer(guardrail, context, result)
                    if isinstance(result, dict)
                    else _guard_stream(guardrail, context, result)
                )
        return result


def input_error(violation: GuardrailViolation) -> LaminaError:
    categories = f" ({', '.join(violation.categories)})" if violation.categories else ""
    return LaminaError(
        f"the input was blocked by guardrail '{violation.guardrail}'{categories}: {violation.message}",
        status=400,
        param="messages",
        code="content_policy_violation",
    )


def _redact_last(request: ChatCompletionRequest, redacted: str) -> ChatCompletionRequest:
    messages = list(request.messages)
    messages[-1] = messages[-1].model_copy(update={"content": redacted})
    return request.model_copy(update={"messages": messages})


def _refusal(request: ChatCompletionRequest, message: str) -> Result:
    if not request.stream:
        return chat_completion(request.model, [chat_choice(0, message, "content_filter")], None)

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        chunk_id, created = new_id("chatcmpl"), int(time.time())
        delta = {"role": "assistant", "content": message}
        yield chat_chunk(chunk_id, request.model, created, [{"index": 0, "delta": delta, "finish_reason": None}])
        yield chat_chunk(
            chunk_id, request.model, created, [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]
        )

    return chunks()


async def _judge_input(guardrail: Guardrail, context: list[ChatMessage]) -> GuardrailViolation | None:
    token = _checking.set(True)
    try:
        return await guardrail.check_input(context)
    finally:
        _checking.reset(token)


async def _judge(guardrail: Guardrail, context: list[ChatMessage], text: str) -> GuardrailViolation | None:
    token = _checking.set(True)
    try:
        return await guardrail.check_output(context, text)
    finally:
        _checking.reset(token)


async def _guard_answer(guardrail: Guardrail, context: list[ChatMessage], answer: dict[str, Any]) -> dict[str, Any]:
    for choice in answer.get("choices") or []:
        message = choice.get("message") or {}
        text = message.get("content")
        if isinstance(text, str) and text and (violation := await _judge(guardrail, context, text)):
            log.info("guardrail %s filtered an answer: %s", guardrail.name, violation.categories)
            message["content"] = guardrail.refusal_message
            message.pop("tool_calls", None)
            choice["finish_reason"] = "content_filter"
    return answer


async def _guard_stream(
    guardrail: Guardrail, context: list[ChatMessage], chunks: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    texts: dict[int, str] = {}
    checked: dict[int, int] = {}  # per choice: how much of its text a check has passed
    held: list[dict[str, Any]] = []
    last: dict[str, Any] = {}

    async def passes(indexes: list[int]) -> bool:
        for index in indexes:
            violation = await _judge(guardrail, context, texts[index])
            checked[index] = len(texts[index])
            if violation is not None:
                log.info("guardrail %s cut a streamed answer: %s", guardrail.name, violation.categories)
                return False
        return True

    def cut() -> dict[str, Any]:
        # Every choice ends here: the stream stops, so none can finish later.
        choices = [{"index": i, "delta": {}, "finish_reason": "content_filter"} for i in sorted(texts) or [0]]
        return chat_chunk(last.get("id", new_id("chatcmpl")), last.get("model", ""), last.get("created", 0), choices)

    async with aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            last = chunk
            due: list[int] = []
            for choice in chunk.get("choices") or []:
                index = choice.get("index", 0)
                delta = (choice.get("delta") or {}).get("content") or ""
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


class ShieldGuardrail(Guardrail):
    """Core's guardrail: a registered shield, judged through the safety API, per the run config."""

    def __init__(self, config: GuardrailConfig, safety: Any) -> None:
        self.config = config
        self.safety = safety
        self.name = f"shield:{config.shield}"
        self.on_input_violation = config.on_input_violation
        self.refusal_message = config.refusal_message
        self.output_check_chars = config.output_check_chars
        self.output_hold_back = config.output_hold_back
        self.checks_input = config.apply_to in ("input", "both")

    @property
    def checks_output(self) -> bool:
        return self.config.apply_to in ("output", "both")

    def applies_to(self, model: str) -> bool:
        patterns = self.config.models
        return patterns is None or any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns)

    async def _run(self, messages: list[ChatMessage]) -> GuardrailViolation | None:
        violation = await self.safety.run_shield(self.config.shield, messages, {})
        if violation is None:
            return None
        return GuardrailViolation(
            guardrail=self.name,
            message=violation.user_message,
            categories=violation.categories,
            redacted=violation.metadata.get("redacted"),
        )

    async def check_input(self, messages: list[ChatMessage]) -> GuardrailViolation | None:
        return await self._run(messages) if self.checks_input else None

    async def check_output(self, messages: list[ChatMessage], text: str) -> GuardrailViolation | None:
        return await self._run([*messages, ChatMessage(role="assistant", content=text)])


async def _shield_guardrails(stack: Stack) -> list[Guardrail]:
    return [ShieldGuardrail(config, stack.apis["safety"]) for config in stack.config.guardrails if config.shield]


SHIELD_GUARDRAILS = GuardrailSpec(
    name="shields",
    create=_shield_guardrails,
    description="the run config's `guardrails:`: registered shields on chat completions' input and output",
)
