"""A lean tracer: OpenTelemetry API spans recorded as plain objects, encoded to OTLP once per batch.

The SDK's `TracerProvider` and OTLP exporter cost ~70 µs per span at start/end and as much again to encode, most
of it generic machinery this gateway does not use (attribute validation and locking per span, span processors, a
`ReadableSpan` copy, resource grouping and one protobuf object per attribute value per span). Here the event loop
only fills a slotted object and appends it to a deque; the export thread builds one `ExportTraceServiceRequest`
per batch with opentelemetry-proto's classes, with the Resource and scope encoded once and the attribute
key/value messages that recur (method, model, provider, operation) built once.

Formats stay the libraries': spans are `opentelemetry.trace.Span`s (so the API's context, `get_current_span` and
the W3C propagator work on them), sampling is the SDK's sampler (OTEL_TRACES_SAMPLER), ids come from the SDK's id
generator, the wire format is opentelemetry-proto's. The OTEL_BSP_* batching variables and the OTLP exporter's
(headers, timeout, compression, certificates) are honoured; batches are posted with requests, as the SDK's
OTLP/HTTP exporter does (its own client is private API).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceMessage
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

log = logging.getLogger("lamina.telemetry")
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
KINDS = {
    SpanKind.INTERNAL: trace_pb2.Span.SpanKind.SPAN_KIND_INTERNAL,
    SpanKind.SERVER: trace_pb2.Span.SpanKind.SPAN_KIND_SERVER,
    SpanKind.CLIENT: trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT,
    SpanKind.PRODUCER: trace_pb2.Span.SpanKind.SPAN_KIND_PRODUCER,
    SpanKind.CONSUMER: trace_pb2.Span.SpanKind.SPAN_KIND_CONSUMER,
}
STATUS_CODES = {StatusCode.OK: trace_pb2.Status.STATUS_CODE_OK, StatusCode.ERROR: trace_pb2.Status.STATUS_CODE_ERROR}
HAS_IS_REMOTE = trace_pb2.SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
IS_REMOTE = trace_pb2.SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
EMPTY_STATE = TraceState()


class LeanSpan(trace.Span):
    """A sampled span: what was said about it, kept as given until the export thread encodes it."""

    __slots__ = (
        "attributes", "context", "end_ns", "events", "flags", "kind", "name", "parent_id", "recorder", "span_id",
        "start_ns", "status", "status_message", "trace_id", "trace_state",
    )  # fmt: skip

    def __init__(
        self,
        recorder: SpanRecorder,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        trace_id: int,
        span_id: int,
        parent_id: int,
        flags: int,
        trace_state: TraceState,
    ) -> None:
        self.recorder = recorder
        self.name, self.kind, self.attributes = name, kind, attributes
        self.trace_id, self.span_id, self.parent_id, self.flags = trace_id, span_id, parent_id, flags
        self.trace_state = trace_state
        self.context: SpanContext | None = None
        self.events: list[tuple[str, int, Mapping[str, Any]]] | None = None
        self.status: StatusCode = StatusCode.UNSET
        self.status_message: str | None = None
        self.end_ns = 0
        self.start_ns = time.time_ns()

    def get_span_context(self) -> SpanContext:
        if self.context is None:  # built on demand: most spans never need one
            self.context = SpanContext(self.trace_id, self.span_id, False, SAMPLED, self.trace_state)
        return self.context

    def is_recording(self) -> bool:
        return self.end_ns == 0

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_ns == 0:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.end_ns == 0:
            self.attributes.update(attributes)

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None) -> None:
        if self.end_ns == 0:
            if self.events is None:
                self.events = []
            self.events.append((name, timestamp or time.time_ns(), attributes or {}))

    def update_name(self, name: str) -> None:
        if self.end_ns == 0:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_ns != 0:
            return
        if isinstance(status, Status):
            status, description = status.status_code, status.description
        if self.status is not StatusCode.OK:  # OK is final, as in the SDK
            self.status = status
            self.status_message = description if status is StatusCode.ERROR else None

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        stacktrace = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        self.add_event(
            "exception",
            {
                "exception.type": type(exception).__qualname__,
                "exception.message": str(exception),
                "exception.stacktrace": stacktrace,
                **(attributes or {}),
            },
            timestamp,
        )

    def end(self, end_time: int | None = None) -> None:
        if self.end_ns == 0:
            self.end_ns = end_time or time.time_ns()
            self.recorder.finished(self)


class LeanTracer(trace.Tracer):
    """`start_span` of the OpenTelemetry API, sampled by an SDK sampler, making `LeanSpan`s."""

    def __init__(self, sampler: Sampler, recorder: SpanRecorder) -> None:
        self.sampler = sampler
        self.recorder = recorder
        # A ParentBased sampler (the default, and every OTEL_TRACES_SAMPLER=parentbased_*) follows a local parent's
        # decision: that case needs no call.
        self.follows_parent = isinstance(sampler, ParentBased)
        ids = RandomIdGenerator()
        self.new_trace_id, self.new_span_id = ids.generate_trace_id, ids.generate_span_id

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = trace.get_current_span(context)
        attributes = dict(attributes) if attributes else {}
        if type(parent) is LeanSpan and self.follows_parent:
            span: trace.Span = LeanSpan(
                self.recorder, name, kind, attributes, parent.trace_id, self.new_span_id(), parent.span_id,
                HAS_IS_REMOTE, parent.trace_state,
            )  # fmt: skip
        else:
            parent_context = parent.get_span_context()
            if parent_context.is_valid:
                trace_id, parent_id, state = parent_context.trace_id, parent_context.span_id, parent_context.trace_state
                flags = HAS_IS_REMOTE | IS_REMOTE if parent_context.is_remote else HAS_IS_REMOTE
            else:
                trace_id, parent_id, state, flags = self.new_trace_id(), 0, EMPTY_STATE, HAS_IS_REMOTE
            decision = self.sampler.should_sample(context, trace_id, name, kind, attributes)
            if decision.decision is Decision.RECORD_AND_SAMPLE:
                if decision.attributes:
                    attributes.update(decision.attributes)
                state = decision.trace_state or state
                span = LeanSpan(
                    self.recorder, name, kind, attributes, trace_id, self.new_span_id(), parent_id, flags, state
                )
            else:  # not recorded (RECORD_ONLY is treated as DROP: nothing here reads unexported spans)
                state = decision.trace_state or state
                span = NonRecordingSpan(SpanContext(trace_id, self.new_span_id(), False, NOT_SAMPLED, state))
        if start_time is not None and type(span) is LeanSpan:
            span.start_ns = start_time
        return span

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(span, end_on_exit, record_exception, set_status_on_exception) as current:
            yield current


# -- the export thread


class AttributeEncoder:
    """Attributes → the serialized `attributes` field of a message (a span, an event): merged into the message with
    `MergeFromString`, which appends to the repeated field in C. That is several times cheaper than building or
    copying `KeyValue` objects in Python; and the pairs that recur from span to span (method, route, model,
    provider id, finish reasons) are serialized once."""

    LIMIT = 4096

    def __init__(self, container: Any) -> None:
        self.container = container  # the message class whose `attributes` field is filled
        self.known: dict[tuple[Any, ...], tuple[type, bytes]] = {}

    def encode(self, attributes: Mapping[str, Any]) -> bytes:
        known = self.known
        fragments = []
        for key, value in attributes.items():
            lookup: tuple[Any, ...] = (key, value)
            if type(value) is list or type(value) is tuple:  # finish reasons: ["stop"]; [True] is not [1]
                value = tuple(value)
                lookup = (key, value, tuple(map(type, value)))
            try:
                hit = known.get(lookup)
            except TypeError:  # unhashable: encoded each time
                lookup = ()
                hit = None
            if hit is not None and hit[0] is type(value):  # True == 1: the type tells them apart
                fragments.append(hit[1])
                continue
            if value is None:  # as the SDK does: an attribute set to None is left out
                continue
            fragment = self.container(attributes=[KeyValue(key=key, value=any_value(value))]).SerializeToString()
            if hit is None and lookup and not (type(value) is str and len(value) > 64):  # long strings rarely recur
                if len(known) >= self.LIMIT:
                    known.clear()
                known[lookup] = (type(value), fragment)
            fragments.append(fragment)
        return b"".join(fragments)


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Sequence):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        log.warning("telemetry: %s is not a number; using %d", name, default)
        return default


class SpanRecorder:
    """Finished spans, queued in memory (OTEL_BSP_MAX_QUEUE_SIZE; more are dropped and counted) and exported by
    a thread of its own every OTEL_BSP_SCHEDULE_DELAY ms or OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans."""

    def __init__(self, resource: Resource, post: Any) -> None:
        self.post = post  # bytes of an ExportTraceServiceRequest -> bool (sent)
        self.max_queue = env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.batch_size = min(env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self.max_queue)
        self.delay = env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.queue: collections.deque[LeanSpan] = collections.deque()
        self.dropped = 0
        self.attributes = AttributeEncoder(trace_pb2.Span)
        self.event_attributes = AttributeEncoder(trace_pb2.Span.Event)
        self.resource = ResourceMessage(
            attributes=[KeyValue(key=key, value=any_value(value)) for key, value in resource.attributes.items()]
        )
        self.wake = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self.run, name="lamina-span-export", daemon=True)
        self.thread.start()

    def finished(self, span: LeanSpan) -> None:
        queue = self.queue
        if len(queue) >= self.max_queue:
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) == self.batch_size:  # once per batch: Event.set takes a lock
            self.wake.set()

    def run(self) -> None:
        while not self.stopping:
            woken = self.wake.wait(self.delay)
            self.wake.clear()
            # Woken by a full batch: send full batches only (spans arriving meanwhile wait for the next), so a busy
            # gateway posts few large requests rather than many small ones; on the timer, send everything.
            self.export(full_only=woken)

    def export(self, full_only: bool = False) -> None:
        queue = self.queue
        while queue and (len(queue) >= self.batch_size or not full_only):
            batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
            try:
                self.post(self.encode(batch).SerializeToString())
            except Exception:  # a broken collector must not stop the thread
                log.exception("telemetry: exporting %d spans failed", len(batch))
        if self.dropped:
            log.warning("telemetry: %d spans dropped (OTEL_BSP_MAX_QUEUE_SIZE is %d)", self.dropped, self.max_queue)
            self.dropped = 0

    def encode(self, batch: list[LeanSpan]) -> ExportTraceServiceRequest:
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.CopyFrom(self.resource)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "lamina"
        spans = scope_spans.spans
        encode, encode_event = self.attributes.encode, self.event_attributes.encode
        for span in batch:
            message = spans.add(
                trace_id=span.trace_id.to_bytes(16, "big"),
                span_id=span.span_id.to_bytes(8, "big"),
                name=span.name,
                kind=KINDS[span.kind],
                start_time_unix_nano=span.start_ns,
                end_time_unix_nano=span.end_ns,
                flags=span.flags,
            )
            message.MergeFromString(encode(span.attributes))
            if span.parent_id:
                message.parent_span_id = span.parent_id.to_bytes(8, "big")
            if span.trace_state:
                message.trace_state = span.trace_state.to_header()
            if span.events:
                for name, timestamp, attributes in span.events:
                    event = message.events.add(name=name, time_unix_nano=timestamp)
                    event.MergeFromString(encode_event(attributes))
            if span.status is not StatusCode.UNSET:
                message.status.code = STATUS_CODES[span.status]
                if span.status_message:
                    message.status.message = span.status_message
        return request

    def shutdown(self) -> None:
        self.stopping = True
        self.wake.set()
        self.thread.join()
        self.export()


# -- OTLP/HTTP posting


def otlp_setting(signal: str, name: str) -> str | None:
    """An OTLP exporter variable, the signal's own (OTEL_EXPORTER_OTLP_TRACES_X) before the general one."""
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}") or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")


def otlp_poster(endpoint: str, headers: Mapping[str, str] | None, signal: str = "traces") -> Any:
    """A function posting one serialized OTLP request to `endpoint`, as the SDK's OTLP/HTTP exporter does: the
    OTEL_EXPORTER_OTLP_(TRACES_)HEADERS / TIMEOUT / COMPRESSION / CERTIFICATE / CLIENT_* variables, retries with
    backoff on 429 and 502-504 within the timeout."""
    import gzip

    import requests
    from opentelemetry.util.re import parse_env_headers

    session = requests.Session()
    session.headers.update(parse_env_headers(otlp_setting(signal, "HEADERS") or "", liberal=True))
    session.headers.update(headers or {})
    session.headers["Content-Type"] = "application/x-protobuf"
    timeout = float(otlp_setting(signal, "TIMEOUT") or 10000) / 1000
    compress = (otlp_setting(signal, "COMPRESSION") or "none").strip().lower() == "gzip"
    if compress:
        session.headers["Content-Encoding"] = "gzip"
    if certificate := otlp_setting(signal, "CERTIFICATE"):
        session.verify = certificate
    client_certificate, client_key = otlp_setting(signal, "CLIENT_CERTIFICATE"), otlp_setting(signal, "CLIENT_KEY")
    if client_certificate:
        session.cert = (client_certificate, client_key) if client_key else client_certificate

    def post(data: bytes) -> bool:
        body = gzip.compress(data) if compress else data
        deadline = time.monotonic() + timeout
        pause = 1.0
        while True:
            try:
                answer = session.post(endpoint, data=body, timeout=max(deadline - time.monotonic(), 0.1))
                if answer.ok:
                    return True
                retry = answer.status_code in (429, 502, 503, 504)
                problem = f"HTTP {answer.status_code}"
            except requests.RequestException as exc:
                retry, problem = True, type(exc).__name__
            if not retry or time.monotonic() + pause > deadline:
                log.warning("telemetry: OTLP export to %s failed: %s", endpoint, problem)
                return False
            time.sleep(pause)
            pause *= 2

    return post
