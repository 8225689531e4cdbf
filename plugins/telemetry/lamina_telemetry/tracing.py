"""A lean tracer: OpenTelemetry API spans recorded as plain objects, encoded to OTLP once per batch.

The SDK's `TracerProvider` and OTLP exporter cost ~70 µs per span at start/end and as much again to encode, most
of it generic machinery this gateway does not use (attribute validation and locking per span, span processors, a
`ReadableSpan` copy, resource grouping and one protobuf object per attribute value per span). Here the event loop
only fills a slotted object and appends it to a deque; the export thread writes each batch's
`ExportTraceServiceRequest` as bytes, with the Resource, the scope and the attribute key/values that recur
(method, model, provider, operation) encoded once.

Formats stay the libraries': spans are `opentelemetry.trace.Span`s kept in OpenTelemetry's context (so the API's
`get_current_span` and the W3C propagator work on them), sampling is the SDK's sampler (OTEL_TRACES_SAMPLER), the
wire format is opentelemetry-proto's. The OTEL_BSP_* batching variables and the OTLP exporter's (headers, timeout,
compression, certificates) are honoured; batches are posted with requests, as the SDK's OTLP/HTTP exporter does
(its own client is private API).
"""

from __future__ import annotations

import collections
import logging
import os
import random
import struct
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceMessage
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
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
# By id(): a dict keyed by the enum members calls Enum.__hash__, a Python function, for every span.
KIND_CODES = {id(kind): code for kind, code in KINDS.items()}
STATUS_CODES = {
    id(StatusCode.UNSET): trace_pb2.Status.STATUS_CODE_UNSET,
    id(StatusCode.OK): trace_pb2.Status.STATUS_CODE_OK,
    id(StatusCode.ERROR): trace_pb2.Status.STATUS_CODE_ERROR,
}
HAS_IS_REMOTE = trace_pb2.SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
IS_REMOTE = trace_pb2.SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
EMPTY_STATE = TraceState()
TRACE_ID_LIMIT = (1 << 64) - 1  # TraceIdRatioBased compares a trace id's low 64 bits to its bound
getrandbits = random.getrandbits  # what the SDK's RandomIdGenerator draws ids with

# -- OpenTelemetry's current context, read and set in one step

# The key `trace.set_span_in_context` files the current span under, found through the API.
SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))


class PublicContext:
    """OpenTelemetry's current context through its public functions (a runtime context other than the default)."""

    @staticmethod
    def get() -> Context:
        return context_api.get_current()

    @staticmethod
    def set(value: Context) -> Token[Context]:
        return context_api.attach(value)

    @staticmethod
    def reset(token: Token[Context]) -> None:
        context_api.detach(token)


def current_context_variable() -> ContextVar[Context] | PublicContext:
    """The ContextVar OpenTelemetry's default runtime context keeps the current `Context` in. Used directly, the
    current span is one lookup, and making a span current one `set`, where the API's functions are four and six
    Python calls deep; anything unexpected (another runtime context) falls back to the API."""
    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar):
        probe = Context({SPAN_KEY: trace.INVALID_SPAN})
        token = variable.set(probe)
        try:
            if context_api.get_current() is probe:
                return variable
        finally:
            variable.reset(token)
    return PublicContext()


CURRENT = current_context_variable()


class Preset:
    """Attributes many spans start with (an inference call's model and parameters, an upstream URL), made once and
    shared by those spans: the export thread encodes them once, not once per span."""

    __slots__ = ("attributes", "encoded")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes  # never changed once made
        self.encoded: bytes | None = None  # by the export thread


class LeanSpan(trace.Span):
    """A sampled span: what was said about it, kept as given until the export thread encodes it. Its attributes
    are its `preset`'s, if any, then its own `attributes`."""

    __slots__ = (
        "attributes", "context", "end_ns", "events", "flags", "kind", "name", "parent_id", "preset", "recorder",
        "span_id", "start_ns", "status", "status_message", "trace_id", "trace_state",
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
        preset: Preset | None = None,
    ) -> None:
        self.recorder = recorder
        self.name, self.kind, self.attributes, self.preset = name, kind, attributes, preset
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
            if self.preset is not None and key in self.preset.attributes:
                self.unshare()
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.end_ns == 0:
            if self.preset is not None and not self.preset.attributes.keys().isdisjoint(attributes):
                self.unshare()
            self.attributes.update(attributes)

    def unshare(self) -> None:
        """A preset attribute is being changed: the span keeps all its attributes itself (in the same order)."""
        if self.preset is not None:
            self.attributes = {**self.preset.attributes, **self.attributes}
            self.preset = None

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
        if self.end_ns != 0:
            return
        self.end_ns = end_time or time.time_ns()
        recorder = self.recorder
        queue = recorder.queue
        if len(queue) >= recorder.max_queue:
            recorder.dropped += 1
            return
        queue.append(self)
        if len(queue) == recorder.batch_size:  # once per batch: Event.set takes a lock
            recorder.wake.set()


def root_bound(sampler: Sampler) -> int | None:
    """For the SDK's standard samplers, the bound a new trace id's low 64 bits are compared to when a span has no
    parent (the rule of `TraceIdRatioBased`; always on: every id passes, always off: none): the decision is then
    made without the sampler's calls. None: ask the sampler."""
    root: Any = sampler
    if isinstance(sampler, ParentBased) and type(sampler).should_sample is ParentBased.should_sample:
        root = getattr(sampler, "_root", None)
    if root is ALWAYS_ON:
        return TRACE_ID_LIMIT + 1
    if root is ALWAYS_OFF:
        return 0
    if isinstance(root, TraceIdRatioBased) and type(root).should_sample is TraceIdRatioBased.should_sample:
        return int(root.bound)
    return None


class LeanTracer(trace.Tracer):
    """`start_span` of the OpenTelemetry API, sampled by an SDK sampler, making `LeanSpan`s."""

    def __init__(self, sampler: Sampler, recorder: SpanRecorder) -> None:
        self.sampler = sampler
        self.recorder = recorder
        # A ParentBased sampler (the default, and every OTEL_TRACES_SAMPLER=parentbased_*) follows a local parent's
        # decision: that case needs no call.
        self.follows_parent = isinstance(sampler, ParentBased)
        self.root_bound = root_bound(sampler)
        ids = RandomIdGenerator()
        self.new_trace_id, self.new_span_id = ids.generate_trace_id, ids.generate_span_id

    def start(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        context: Context | None = None,
        preset: Preset | None = None,
    ) -> trace.Span:
        """A span, child of `context`'s (by default the current one's); it keeps `attributes` (not a copy), after
        `preset`'s."""
        parent = (CURRENT.get() if context is None else context).get(SPAN_KEY)
        if type(parent) is LeanSpan and self.follows_parent:
            return LeanSpan(
                self.recorder, name, kind, attributes, parent.trace_id, getrandbits(64) or self.new_span_id(),
                parent.span_id, HAS_IS_REMOTE, parent.trace_state, preset,
            )  # fmt: skip
        if parent is None and self.root_bound is not None:  # a new trace, decided as the sampler would
            trace_id = getrandbits(128) or self.new_trace_id()
            span_id = getrandbits(64) or self.new_span_id()
            if trace_id & TRACE_ID_LIMIT < self.root_bound:
                return LeanSpan(
                    self.recorder, name, kind, attributes, trace_id, span_id, 0, HAS_IS_REMOTE, EMPTY_STATE, preset
                )
            return NonRecordingSpan(SpanContext(trace_id, span_id, False, NOT_SAMPLED, EMPTY_STATE))
        if preset is not None:  # the sampler sees them all
            attributes = {**preset.attributes, **attributes}
        if not isinstance(parent, trace.Span):
            parent = trace.INVALID_SPAN
        parent_context = parent.get_span_context()
        if parent_context.is_valid:
            trace_id, parent_id, state = parent_context.trace_id, parent_context.span_id, parent_context.trace_state
            flags = HAS_IS_REMOTE | IS_REMOTE if parent_context.is_remote else HAS_IS_REMOTE
        else:
            trace_id, parent_id, state, flags = self.new_trace_id(), 0, EMPTY_STATE, HAS_IS_REMOTE
        decision = self.sampler.should_sample(context, trace_id, name, kind, attributes)
        state = decision.trace_state or state
        if decision.decision is Decision.RECORD_AND_SAMPLE:
            if decision.attributes:
                attributes.update(decision.attributes)
            return LeanSpan(
                self.recorder, name, kind, attributes, trace_id, self.new_span_id(), parent_id, flags, state
            )
        # Not recorded (RECORD_ONLY is treated as DROP: nothing here reads unexported spans).
        return NonRecordingSpan(SpanContext(trace_id, self.new_span_id(), False, NOT_SAMPLED, state))

    def enter(
        self, name: str, kind: SpanKind, attributes: dict[str, Any], preset: Preset | None = None
    ) -> tuple[trace.Span, Token[Context]]:
        """A child of the current span, made the current one: `context.detach` (or `CURRENT.reset`) the token."""
        current = CURRENT.get()
        parent = current.get(SPAN_KEY)
        if type(parent) is LeanSpan and self.follows_parent:  # `start`'s first case, without its call
            span: trace.Span = LeanSpan(
                self.recorder, name, kind, attributes, parent.trace_id, getrandbits(64) or self.new_span_id(),
                parent.span_id, HAS_IS_REMOTE, parent.trace_state, preset,
            )  # fmt: skip
        else:
            span = self.start(name, kind, attributes, current, preset)
        return span, CURRENT.set(Context({**current, SPAN_KEY: span}))

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        span = self.start(name, kind, dict(attributes) if attributes else {}, context)
        if start_time is not None and type(span) is LeanSpan:
            span.start_ns = start_time
        return span

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
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


# -- the export thread: OTLP protobuf written as bytes
#
# A span's fields are few and fixed; written with struct and joined, a batch costs a few µs per span, where building
# upb messages (a `spans.add` with seven fields, the attributes merged in) and serializing them cost 8-10.


def varint(n: int) -> bytes:
    if n < 0x80:
        return VARINTS[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


VARINTS = [bytes([n]) for n in range(0x80)]


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes, a message)."""
    size = len(payload)
    return tag + (VARINTS[size] if size < 0x80 else varint(size)) + payload


# Span: trace_id (1) and span_id (2), 16 and 8 bytes, big-endian like the hex of a traceparent.
IDS = struct.Struct(">BBQQBBQ")
IDS_PARENT = struct.Struct(">BBQQBBQBBQ")  # and parent_span_id (4)
# flags (16, fixed32), kind (6, an enum under 128), start (7) and end (8) times (fixed64)
FIXED = struct.Struct("<BBIBBBQBQ")
EVENT_TIME = struct.Struct("<BQ")  # Span.Event: time_unix_nano (1)
INT64 = struct.Struct("<q")
DOUBLE = struct.Struct("<d")
LOW_64 = (1 << 64) - 1


def any_value_bytes(value: Any) -> bytes | None:
    """An AnyValue's bytes for a string, bool, int or float; None for the rest (left to opentelemetry-proto)."""
    kind = type(value)
    if kind is str:
        return field(b"\x0a", value.encode())
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int and -(1 << 63) <= value < (1 << 63):
        return b"\x18" + varint(value & LOW_64)  # int64: a negative one as its two's complement
    if kind is float:
        return b"\x21" + DOUBLE.pack(value)
    return None


class AttributeEncoder:
    """Attributes → the bytes of a message's repeated `attributes` field (a span's, an event's), to be joined with
    its other fields; the pairs that recur from span to span (method, route, model, provider id, finish reasons)
    are encoded once."""

    LIMIT = 4096
    UNIQUE = frozenset(("lamina.request_id", "gen_ai.response.id"))  # never seen twice: not kept

    def __init__(self, container: Any, tag: bytes) -> None:
        self.container = container  # the message class whose `attributes` field this is
        self.tag = tag
        self.known: dict[tuple[Any, ...], tuple[type, bytes]] = {}
        self.keys: dict[str, bytes] = {}

    def encode(self, attributes: Mapping[str, Any]) -> bytes:
        known = self.known
        fragments = []
        for item in attributes.items():
            if type(item[1]) is list:  # looked up as a tuple (encoded alike)
                item = (item[0], tuple(item[1]))
            try:
                hit = known.get(item)
            except TypeError:  # unhashable: encoded each time
                hit = None
            if hit is not None and hit[0] is type(item[1]):  # True == 1: the type tells them apart
                fragments.append(hit[1])
                continue
            key, value = item
            if value is None:  # as the SDK does: an attribute set to None is left out
                continue
            fragment = self.fragment(key, value)
            if hit is None and key not in self.UNIQUE and recurs(value):
                if len(known) >= self.LIMIT:
                    known.clear()
                known[item] = (type(value), fragment)
            fragments.append(fragment)
        return b"".join(fragments)

    def fragment(self, key: str, value: Any) -> bytes:
        prefix = self.keys.get(key)
        if prefix is not None and type(value) is str and len(value) < 100:
            # A short string (an id: most of the pairs met only once): every length below 128, one byte each.
            data = value.encode()
            size = len(data)
            if size < 100 and len(prefix) + size < 100:
                return b"%b%c%b\x12%c\x0a%c%b" % (self.tag, len(prefix) + size + 4, prefix, size + 2, size, data)
        encoded = any_value_bytes(value)
        if encoded is None:
            message = self.container(attributes=[KeyValue(key=key, value=any_value(value))])
            return bytes(message.SerializeToString())
        if prefix is None:
            if len(self.keys) >= self.LIMIT:
                self.keys.clear()
            prefix = self.keys[key] = field(b"\x0a", key.encode())  # KeyValue: key (1), then value (2)
        return field(self.tag, prefix + field(b"\x12", encoded))


def recurs(value: Any) -> bool:
    """Whether a value is worth keeping encoded: a short string, a number, a tuple of short strings (finish
    reasons; of other types no: (True,) == (1,))."""
    kind = type(value)
    if kind is str:
        return len(value) <= 64
    if kind is tuple:
        return all(type(v) is str and len(v) <= 64 for v in value)
    return kind is int or kind is float or kind is bool


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
        self.queue: collections.deque[LeanSpan] = collections.deque()  # finished spans: LeanSpan.end queues them
        self.dropped = 0
        self.attributes = AttributeEncoder(trace_pb2.Span, b"\x4a")
        self.event_attributes = AttributeEncoder(trace_pb2.Span.Event, b"\x1a")
        self.names: dict[str, bytes] = {}  # span names, encoded
        message = ResourceMessage(
            attributes=[KeyValue(key=key, value=any_value(value)) for key, value in resource.attributes.items()]
        )
        # ResourceSpans' resource (1), and ScopeSpans' scope (1): the same in every batch.
        self.resource = field(b"\x0a", message.SerializeToString())
        self.scope = field(b"\x0a", InstrumentationScope(name="lamina").SerializeToString())
        self.wake = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self.run, name="lamina-span-export", daemon=True)
        self.thread.start()

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
                self.post(self.encode(batch))
            except Exception:  # a broken collector must not stop the thread
                log.exception("telemetry: exporting %d spans failed", len(batch))
        if self.dropped:
            log.warning("telemetry: %d spans dropped (OTEL_BSP_MAX_QUEUE_SIZE is %d)", self.dropped, self.max_queue)
            self.dropped = 0

    def encode(self, batch: list[LeanSpan]) -> bytes:
        """The batch as a serialized ExportTraceServiceRequest: one ResourceSpans, one ScopeSpans."""
        encode, encode_event = self.attributes.encode, self.event_attributes.encode
        ids, with_parent, fixed = IDS.pack, IDS_PARENT.pack, FIXED.pack
        names = self.names
        spans = [self.scope]
        for span in batch:
            name, trace_id, span_id, parent_id, attributes, events = (
                span.name,
                span.trace_id,
                span.span_id,
                span.parent_id,
                span.attributes,
                span.events,
            )
            state = span.trace_state
            encoded_name = names.get(name)
            if encoded_name is None:
                if len(names) >= AttributeEncoder.LIMIT:
                    names.clear()
                encoded_name = names[name] = field(b"\x2a", name.encode())
            high, low = trace_id >> 64, trace_id & LOW_64
            preset = span.preset
            if preset is None:
                shared = b""
            else:
                shared = preset.encoded or b""
                if not shared:
                    shared = preset.encoded = encode(preset.attributes)
            parts = [
                with_parent(0x0A, 16, high, low, 0x12, 8, span_id, 0x22, 8, parent_id)
                if parent_id
                else ids(0x0A, 16, high, low, 0x12, 8, span_id),
                encoded_name,
                fixed(0x85, 0x01, span.flags, 0x30, KIND_CODES[id(span.kind)], 0x39, span.start_ns, 0x41, span.end_ns),
                shared,
                encode(attributes) if attributes else b"",
            ]
            if state is not EMPTY_STATE and state:  # (TraceState's __len__ is Python)
                parts.append(field(b"\x1a", state.to_header().encode()))
            if events:
                for event_name, timestamp, event_attributes in events:
                    event = EVENT_TIME.pack(0x09, timestamp) + field(b"\x12", event_name.encode())
                    parts.append(field(b"\x5a", event + encode_event(event_attributes)))
            if span.status is not StatusCode.UNSET:
                encoded_status = b"\x18" + VARINTS[STATUS_CODES[id(span.status)]]
                message = span.status_message
                if message:
                    encoded_status = field(b"\x12", message.encode()) + encoded_status
                parts.append(field(b"\x7a", encoded_status))
            body = b"".join(parts)
            size = len(body)  # most spans are 128 bytes to 16 KiB: a two-byte varint
            length = bytes((size & 0x7F | 0x80, size >> 7)) if 0x80 <= size < 0x4000 else varint(size)
            spans += (b"\x12", length, body)  # ScopeSpans.spans (2)
        resource_spans = self.resource + field(b"\x12", b"".join(spans))  # ResourceSpans.scope_spans (2)
        return field(b"\x0a", resource_spans)  # ExportTraceServiceRequest.resource_spans (1)

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
    # What `session.post` works out for every post, worked out once (two thirds of a post's instructions): what it
    # reads from the environment (proxy variables, ~/.netrc, the CA bundle variables, which win over the session's
    # `verify` as requests merges them) and the prepared request (URL, headers, auth); each post then goes straight
    # to the transport adapter, without requests' cookie jar and redirect handling, which an OTLP collector does
    # not use.
    proxies = requests.utils.get_environ_proxies(endpoint)
    session.auth = requests.utils.get_netrc_auth(endpoint)
    if bundle := os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"):
        session.verify = bundle
    prepared = session.prepare_request(requests.Request("POST", endpoint, data=b""))
    adapter = session.get_adapter(endpoint)

    def post(data: bytes) -> bool:
        body = gzip.compress(data) if compress else data
        deadline = time.monotonic() + timeout
        pause = 1.0
        while True:
            try:
                prepared.prepare_body(body, None)  # and its Content-Length
                answer = adapter.send(
                    prepared,
                    timeout=max(deadline - time.monotonic(), 0.1),
                    verify=session.verify,
                    cert=session.cert,
                    proxies=proxies,
                )
                _ = answer.content  # read: the connection goes back to the pool
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
