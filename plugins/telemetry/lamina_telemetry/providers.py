"""A provider instance with every call in a span (GenAI semantic conventions for inference) and measured.

It sits inside core's ProviderProxy, so it sees the provider's own exceptions before the proxy turns them into
500s; the proxy's failure attribution is unchanged.
"""

from __future__ import annotations

import inspect
import operator
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from lamina.errors import LaminaError
from lamina.specs import ProviderSpec
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from lamina_telemetry.metrics import Metrics
from lamina_telemetry.tracing import CURRENT, LeanSpan, LeanTracer, Preset

OPERATIONS = {"chat_completion": "chat", "completion": "text_completion", "embeddings": "embeddings"}
REQUEST_ATTRIBUTES = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "seed": "gen_ai.request.seed",
}
# What an inference request's preset attributes are made from (see Preset), read in one call.
REQUEST_FIELDS = ("model", "stream", *REQUEST_ATTRIBUTES)
READ_REQUEST = operator.attrgetter(*REQUEST_FIELDS)
# Finish reasons as one shared tuple per combination: a dict given a fresh tuple is tracked by the garbage collector
# until a full collection, one given a tuple the collector has already untracked (strings only) is not, so the
# span's attributes are not one more object promoted to the old generation while the span waits for its batch.
REASONS: dict[tuple[str, ...], tuple[str, ...]] = {}


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, LaminaError):
        return exc.code or exc.type
    return type(exc).__name__


def fail(span: Span | None, exc: BaseException) -> None:
    if span is not None:
        span.record_exception(exc)
        span.set_attribute("error.type", error_kind(exc))
        span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
        span.end()


class InstrumentedProvider:
    def __init__(
        self, instance: Any, provider_id: str, spec: ProviderSpec, tracer: LeanTracer | None, metrics: Metrics | None
    ) -> None:
        self.instance = instance
        self.provider_id = provider_id
        self.spec = spec
        self.tracer = tracer
        self.metrics = metrics

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.instance, name)
        if name.startswith("_"):
            return value
        if inspect.iscoroutinefunction(value):
            if self.spec.api == "inference" and name in OPERATIONS:
                wrapped = self._inference(value, name)
            elif self.spec.api == "tool_runtime" and name in ("invoke_tool", "list_tools"):
                wrapped = self._tool(value, name)
            else:
                wrapped = self._call(value, name)
        elif inspect.isasyncgenfunction(value):
            wrapped = self._generator(value, name)
        else:
            return value
        self.__dict__[name] = wrapped
        return wrapped

    def _start(self, name: str, attributes: dict[str, Any]) -> tuple[Span | None, object]:
        if self.tracer is None:
            return None, None
        return self.tracer.enter(name, SpanKind.CLIENT, attributes)

    def _failed(self, span: Span | None, exc: BaseException) -> None:
        fail(span, exc)
        if self.metrics is not None and not isinstance(exc, GeneratorExit):
            self.metrics.upstream_errors.inc((self.provider_id, error_kind(exc)))

    # -- any provider call (vector search, files, safety, ...)

    def _attributes(self, operation: str, args: tuple[Any, ...]) -> dict[str, Any]:
        attributes: dict[str, Any] = {"lamina.provider.id": self.provider_id, "lamina.provider.type": self.spec.type}
        if self.spec.api == "vector_io":
            attributes["db.system.name"] = self.spec.type
            attributes["db.operation.name"] = operation
            if args and isinstance(args[0], str):
                attributes["db.collection.name"] = args[0]
        return attributes

    def _call(self, method: Callable[..., Any], operation: str) -> Callable[..., Any]:
        name = f"{self.spec.api}.{operation}"
        metrics = self.metrics

        async def call(*args: Any, **kwargs: Any) -> Any:
            span, token = self._start(name, self._attributes(operation, args))
            started = time.perf_counter()
            try:
                result = await method(*args, **kwargs)
            except BaseException as exc:
                self._failed(span, exc)
                raise
            finally:
                if token is not None:
                    CURRENT.reset(token)  # type: ignore[arg-type]
            if span is not None:
                span.end()
            if metrics is not None:
                metrics.provider_latency.observe((self.provider_id, operation), time.perf_counter() - started)
            return result

        return call

    def _generator(self, method: Callable[..., Any], operation: str) -> Callable[..., Any]:
        name = f"{self.spec.api}.{operation}"

        async def call(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            span = None if self.tracer is None else self.tracer.start(name, SpanKind.CLIENT, {})
            events = method(*args, **kwargs)
            try:
                async for event in events:
                    yield event
            except BaseException as exc:
                self._failed(span, exc)
                raise
            finally:
                await events.aclose()
            if span is not None:
                span.end()

        return call

    # -- tools: `execute_tool <name>` (GenAI conventions), MCP listings

    def _tool(self, method: Callable[..., Any], operation: str) -> Callable[..., Any]:
        mcp = bool(getattr(self.instance, "serves_mcp", False))
        metrics = self.metrics

        async def call(endpoint: Any, *args: Any, **kwargs: Any) -> Any:
            attributes: dict[str, Any] = {
                "lamina.provider.id": self.provider_id,
                "lamina.provider.type": self.spec.type,
            }
            url = getattr(endpoint, "url", None)
            if url:
                attributes["server.address"] = str(url).split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]
            if operation == "invoke_tool":
                tool = str(args[0] if args else kwargs.get("tool_name", ""))
                name = f"execute_tool {tool}"
                attributes |= {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
                if mcp:
                    attributes["mcp.method.name"] = "tools/call"
            else:
                name = "mcp tools/list" if mcp else "tool_runtime.list_tools"
                if mcp:
                    attributes["mcp.method.name"] = "tools/list"
            span, token = self._start(name, attributes)
            started = time.perf_counter()
            try:
                result = await method(endpoint, *args, **kwargs)
            except BaseException as exc:
                self._failed(span, exc)
                raise
            finally:
                if token is not None:
                    CURRENT.reset(token)  # type: ignore[arg-type]
            error = getattr(result, "error_message", None)
            if span is not None:
                if error:
                    span.set_attribute("error.type", "tool_error")
                    span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
                span.end()
            if metrics is not None:
                metrics.provider_latency.observe((self.provider_id, operation), time.perf_counter() - started)
                if operation == "invoke_tool":
                    outcome = "error" if error else "ok"
                    metrics.tool_calls.inc((self.provider_id, outcome))
            return result

        return call

    # -- inference: GenAI semantic conventions, token and latency metrics

    def _inference(self, method: Callable[..., Any], name: str) -> Callable[..., Any]:
        operation = OPERATIONS[name]
        provider_id = self.provider_id
        presets: dict[tuple[Any, ...], Preset] = {}  # by the request's model and parameters

        async def call(request: Any, *args: Any, **kwargs: Any) -> Any:
            model = str(getattr(request, "model", ""))
            span = None
            token = None
            tracer = self.tracer
            if tracer is not None:
                try:
                    values = READ_REQUEST(request)
                except AttributeError:  # a request without some of them (embeddings)
                    values = tuple(getattr(request, field, None) for field in REQUEST_FIELDS)
                # With the values' types: 1, 1.0 and True are equal keys but not equal attributes.
                key = (values, tuple(map(type, values)))
                preset = presets.get(key)
                if preset is None:
                    attributes: dict[str, Any] = {
                        "gen_ai.operation.name": operation,
                        "gen_ai.request.model": model,
                        "gen_ai.provider.name": self.spec.type,
                        "lamina.provider.id": provider_id,
                    }
                    for attribute, value in zip(REQUEST_ATTRIBUTES.values(), values[2:], strict=True):
                        if type(value) is int or type(value) is float:
                            attributes[attribute] = value
                    attributes["gen_ai.request.stream"] = bool(values[1])
                    if len(presets) >= 1024:
                        presets.clear()
                    preset = presets[key] = Preset(attributes)
                span, token = tracer.enter(f"{operation} {model}", SpanKind.CLIENT, {}, preset)
            started = time.perf_counter()
            try:
                result = await method(request, *args, **kwargs)
            except BaseException as exc:
                self._failed(span, exc)
                raise
            finally:
                if token is not None:
                    CURRENT.reset(token)  # type: ignore[arg-type]
            if hasattr(result, "__anext__"):
                return self._stream(result, span, model, started)
            if isinstance(result, dict):
                reasons = []
                for choice in result.get("choices") or ():
                    if isinstance(choice, dict) and choice.get("finish_reason"):
                        reasons.append(choice["finish_reason"])
                self._finished(span, model, result, result.get("usage"), reasons, started)
            elif span is not None:
                span.end()
            return result

        return call

    def _finished(
        self,
        span: Span | None,
        model: str,
        answer: dict[str, Any],
        usage: Any,
        reasons: list[str],
        started: float,
        output_estimate: int | None = None,
    ) -> tuple[int | None, int | None]:
        input_tokens = output_tokens = None
        if isinstance(usage, dict):
            input_tokens, output_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if output_tokens is None:
            output_tokens = output_estimate
        if type(span) is LeanSpan and span.end_ns == 0:  # else not recorded (or already ended): nothing to say
            attributes = span.attributes
            if answer.get("model"):
                attributes["gen_ai.response.model"] = answer["model"]
            if answer.get("id"):
                attributes["gen_ai.response.id"] = answer["id"]
            if isinstance(input_tokens, int):
                attributes["gen_ai.usage.input_tokens"] = input_tokens
            if isinstance(output_tokens, int):
                attributes["gen_ai.usage.output_tokens"] = output_tokens
            if reasons:
                shared = tuple(reasons)  # hashable: encoded once
                if len(REASONS) < 256:
                    shared = REASONS.setdefault(shared, shared)
                attributes["gen_ai.response.finish_reasons"] = shared
            span.end()
        metrics = self.metrics
        if metrics is not None:
            labels = (model, self.provider_id)
            metrics.e2e_latency.observe(labels, time.perf_counter() - started)
            if isinstance(input_tokens, int):
                metrics.prompt_tokens.inc(labels, input_tokens)
            if isinstance(output_tokens, int):
                metrics.generation_tokens.inc(labels, output_tokens)
            for reason in reasons:
                metrics.success.inc((model, self.provider_id, reason))
        return input_tokens, output_tokens

    async def _stream(self, chunks: Any, span: Span | None, model: str, started: float) -> AsyncIterator[Any]:
        metrics = self.metrics
        labels = (model, self.provider_id)
        if metrics is not None:
            metrics.active_streams.inc(labels)
        first_at = None
        usage = None
        reasons: list[str] = []
        content_chunks = 0
        last: dict[str, Any] = {}
        try:
            async for chunk in chunks:
                if first_at is None:
                    first_at = time.perf_counter()
                    if span is not None:
                        span.add_event("gen_ai.first_token")
                    if metrics is not None:
                        metrics.ttft.observe(labels, first_at - started)
                if type(chunk) is dict:
                    last = chunk
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        if choice.get("finish_reason"):
                            reasons.append(choice["finish_reason"])
                        delta = choice.get("delta") or {}
                        if delta.get("content") or delta.get("tool_calls") or choice.get("text"):
                            content_chunks += 1
                yield chunk
        except BaseException as exc:
            if isinstance(exc, GeneratorExit):  # the client left: not the upstream's fault
                if span is not None:
                    span.set_attribute("lamina.stream.cancelled", True)
                    span.end()
            else:
                self._failed(span, exc)
            raise
        else:
            _, output_tokens = self._finished(span, model, last, usage, reasons, started, content_chunks)
            if metrics is not None and first_at is not None and isinstance(output_tokens, int) and output_tokens > 1:
                per_token = (time.perf_counter() - first_at) / (output_tokens - 1)
                metrics.tpot.observe(labels, per_token)
        finally:
            if metrics is not None:
                metrics.active_streams.inc(labels, -1)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
