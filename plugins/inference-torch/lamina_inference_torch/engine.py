"""Continuous batching on a thread of its own.

Each step: drop cancelled sequences, give waiting ones free KV slots, run one prefill chunk for each sequence
still reading its prompt, then advance every generating sequence by one token in a single batched forward.
Results go back through each sequence's `emit` callback (the provider makes it hop onto the event loop).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tokenizers.decoders import DecodeStream

from lamina_inference_torch.grammar import allowed_tokens
from lamina_inference_torch.model import Decoder
from lamina_inference_torch.prefix_cache import PrefixCache
from lamina_inference_torch.sampling import Sampler, SamplingParams, TokenChoice
from lamina_inference_torch.tokenizer import TextTokenizer

log = logging.getLogger(__name__)

_FREE_KV_AFTER_IDLE = 5.0  # seconds


@dataclass
class TextDelta:
    text: str
    tokens: list[TokenChoice]  # the tokens that produced this text, with logprobs when asked for


@dataclass
class Finished:
    reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens the prefix cache supplied


@dataclass
class Failed:
    error: BaseException


Event = TextDelta | Finished | Failed


@dataclass(eq=False)
class Sequence:
    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    stop: list[str]
    emit: Callable[[Event], None]
    slot: int = -1
    prefilled: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    done: bool = False
    pending_text: str = ""  # decoded text held back because it may be the start of a stop sequence
    unsent: list[TokenChoice] = field(default_factory=list)
    sampler: Sampler | None = None
    detokenizer: DecodeStream | None = None
    matcher: Any = None  # an llguidance.LLMatcher when the output must match a grammar (grammar.py)

    @property
    def position(self) -> int:
        """Where the last generated token goes in the cache."""
        return len(self.prompt) + len(self.generated) - 1


class Engine:
    """Owns the decoder and does all its torch work on one thread.

    `decoder` may be a function that builds it: building on the engine thread matters, because with OpenMP
    every thread that runs parallel torch ops keeps a worker team, and a second live team on a small
    machine halves decode speed (measured: 57 -> 31 tok/s on 2 cores).
    """

    def __init__(
        self,
        decoder: Decoder | Callable[[], Decoder],
        tokenizer: TextTokenizer,
        *,
        threads: int,
        prefill_chunk: int = 256,
        name: str = "model",
        prefix_cache_bytes: int = 0,
    ) -> None:
        self._build = decoder if callable(decoder) else (lambda: decoder)
        self.decoder: Decoder | None = None
        self.tokenizer = tokenizer
        self.threads = threads
        self.prefill_chunk = prefill_chunk
        self.name = name
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes > 0 else None
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._slots: list[Sequence | None] = []
        self._outbox: list[tuple[Callable[[Event], None], Event]] = []  # the engine thread's alone
        self._wake = threading.Condition()
        self._stopping = False
        self._ready = threading.Event()
        self._build_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lamina-torch-engine", daemon=True)
        self._thread.start()

    def wait_ready(self) -> None:
        """Block until the decoder is built; re-raise what went wrong building it."""
        self._ready.wait()
        if self._build_error is not None:
            raise self._build_error

    @property
    def context_length(self) -> int:
        self.wait_ready()
        return self.decoder.context_length

    def submit(self, sequence: Sequence) -> None:
        with self._wake:
            if self._stopping:
                raise RuntimeError("the engine is closed")
            self._waiting.append(sequence)
            self._wake.notify()

    def cancel(self, sequence: Sequence) -> None:
        sequence.cancelled = True
        with self._wake:
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    # The engine thread

    def _run(self) -> None:
        torch.set_num_threads(self.threads)
        try:
            self.decoder = self._build()
            self._slots = [None] * self.decoder.max_batch
        except BaseException as error:
            self._build_error = error
            return
        finally:
            self._build = None  # what it holds (the tensors it was built from) is the decoder's now, or garbage
            self._ready.set()
        # Ready to take requests; the float16 copies are packed before the first step: it costs seconds, which
        # the rest of the server's start overlaps (packing releases the GIL).
        packing = time.perf_counter()
        try:
            # Each float16 copy is freed as it is packed; handing its pages back at once keeps the peak down.
            self.decoder.pack(progress=lambda done, total: release_free_memory())
        except Exception:  # the first step packs again, and fails its requests with the error
            log.exception("%s: packing the float16 weight copies failed", self.name)
        if time.perf_counter() - packing > 0.1:
            log.info("%s: packed the float16 weight copies in %.1f s", self.name, time.perf_counter() - packing)
        release_free_memory()
        while True:
            with self._wake:
                while not self._stopping and not self._waiting and not any(self._slots):
                    # Idle for a while: give the KV cache's memory back. Not at once: a conversation's next turn
                    # would allocate (and fault in) all of it again.
                    if not self._wake.wait(timeout=_FREE_KV_AFTER_IDLE):
                        self.decoder.free_kv()
                if self._stopping:
                    break
            try:
                self._step()
            except Exception as error:  # a bug or OOM must fail the requests, not hang them
                log.exception("inference step failed")
                for sequence in self._active():
                    self._finish_with(sequence, Failed(error))
            finally:
                self._send_events()
        for sequence in [*self._waiting, *self._active()]:
            self._finish_with(sequence, Failed(RuntimeError("the inference engine shut down")))
        self._send_events()

    def _active(self) -> list[Sequence]:
        return [s for s in self._slots if s is not None]

    def _release(self, sequence: Sequence) -> None:
        sequence.done = True
        if 0 <= sequence.slot < len(self._slots) and self._slots[sequence.slot] is sequence:
            self._slots[sequence.slot] = None

    def _finish_with(self, sequence: Sequence, event: Event) -> None:
        self._release(sequence)
        self._emit(sequence, event)

    def _emit(self, sequence: Sequence, event: Event) -> None:
        """Events wait for the end of the step (`_send_events`): each one wakes the server's event loop, whose
        thread then holds the GIL this thread needs for the rest of the step (8 streams: ~3 ms of a ~14 ms step)."""
        self._outbox.append((sequence.emit, event))

    def _send_events(self) -> None:
        outbox, self._outbox = self._outbox, []
        for emit, event in outbox:
            emit(event)

    def _admit(self) -> None:
        with self._wake:
            for sequence in list(self._waiting):
                if sequence.cancelled:
                    self._waiting.remove(sequence)
            while self._waiting and None in self._slots:
                sequence = self._waiting.popleft()
                sequence.slot = self._slots.index(None)  # lowest free slot keeps the decode batch compact
                self._slots[sequence.slot] = sequence
                sequence.sampler = Sampler(sequence.params, self.decoder.vocab_size)
                sequence.detokenizer = DecodeStream(skip_special_tokens=True)
                if self.prefix_cache is not None:
                    self._reuse_prefix(sequence)

    def _reuse_prefix(self, sequence: Sequence) -> None:
        # The last prompt token is always prefilled: its logits choose the first generated token.
        blocks = self.prefix_cache.lookup(sequence.prompt, len(sequence.prompt) - 1)
        for index, block in enumerate(blocks):
            self.decoder.write_kv(sequence.slot, index * self.prefix_cache.block, block.kv)
        sequence.prefilled = sequence.cached_tokens = len(blocks) * self.prefix_cache.block

    def _step(self) -> None:
        for sequence in self._active():
            if sequence.cancelled:
                self._release(sequence)
        self._admit()
        for sequence in self._active():
            if sequence.prefilled < len(sequence.prompt):
                self._prefill_chunk(sequence)
        generating = [s for s in self._active() if s.generated and not s.done]
        if generating:
            self._decode(generating)

    def _prefill_chunk(self, sequence: Sequence) -> None:
        start = sequence.prefilled
        chunk = sequence.prompt[start : start + self.prefill_chunk]
        logits = self.decoder.prefill(sequence.slot, chunk, start=start)
        sequence.prefilled += len(chunk)
        if sequence.prefilled == len(sequence.prompt):
            if self.prefix_cache is not None:
                slot = sequence.slot
                self.prefix_cache.insert(
                    sequence.prompt, len(sequence.prompt), lambda s, e: self.decoder.read_kv(slot, s, e)
                )
            self._choose_and_accept(sequence, logits)

    def _decode(self, generating: list[Sequence]) -> None:
        width = max(s.slot for s in generating) + 1
        tokens = [0] * width
        # Rows without a generating sequence still run; point their cache write somewhere harmless: a free
        # slot's position 0, or the position a prefilling sequence will write next.
        positions = [s.prefilled if s is not None else 0 for s in self._slots[:width]]
        for sequence in generating:
            tokens[sequence.slot] = sequence.generated[-1]
            positions[sequence.slot] = sequence.position
        logits = self.decoder.decode(torch.tensor(tokens), torch.tensor(positions))
        for sequence in generating:
            self._choose_and_accept(sequence, logits[sequence.slot])

    def _choose_and_accept(self, sequence: Sequence, logits: torch.Tensor) -> None:
        allowed = None
        if sequence.matcher is not None:
            allowed = allowed_tokens(sequence.matcher, logits.shape[-1])
            if not allowed.any():  # the grammar is complete (or the matcher failed): nothing may follow
                if sequence.matcher.is_error():
                    log.warning("%s: grammar matcher failed: %s", self.name, sequence.matcher.get_error())
                self._finish(sequence, "stop", sequence.pending_text)
                return
        self._accept(sequence, sequence.sampler.choose(logits, allowed))

    def _accept(self, sequence: Sequence, choice: TokenChoice) -> None:
        token = choice.token
        sequence.generated.append(token)
        sequence.sampler.observe(token)
        sequence.unsent.append(choice)
        if token in self.tokenizer.stop_token_ids:
            self._finish(sequence, "stop", sequence.pending_text)
            return
        # A grammar that is complete after this token (a JSON value closed) ends the answer without waiting for EOS.
        complete = (
            sequence.matcher is not None and sequence.matcher.consume_token(token) and sequence.matcher.is_stopped()
        )
        text = sequence.pending_text + (sequence.detokenizer.step(self.tokenizer.tokenizer, token) or "")
        stop_at = _first_stop(text, sequence.stop)
        if stop_at is not None:
            self._finish(sequence, "stop", text[:stop_at])
            return
        if complete:
            self._finish(sequence, "stop", text)
            return
        if len(sequence.generated) >= sequence.max_tokens or sequence.position + 1 >= self.context_length:
            self._finish(sequence, "length", text)
            return
        held = _stop_prefix_length(text, sequence.stop)
        sequence.pending_text = text[len(text) - held :] if held else ""
        ready = text[: len(text) - held]
        if ready:
            self._emit(sequence, TextDelta(ready, sequence.unsent))
            sequence.unsent = []

    def _finish(self, sequence: Sequence, reason: str, text: str) -> None:
        if text or sequence.unsent:
            self._emit(sequence, TextDelta(text, sequence.unsent))
            sequence.unsent = []
        if self.prefix_cache is not None:
            # The answer's KV too (but its last token's, never fed back): a conversation's next turn is this prompt,
            # this answer and a new message, and reuses all of it.
            slot = sequence.slot
            self.prefix_cache.insert(
                sequence.prompt + sequence.generated, sequence.position, lambda s, e: self.decoder.read_kv(slot, s, e)
            )
        self._finish_with(
            sequence, Finished(reason, len(sequence.prompt), len(sequence.generated), sequence.cached_tokens)
        )


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS. Loading frees hundreds of MB in pieces of a few MB (float32
    weights while converting, float16 copies once packed), which glibc keeps in its arenas otherwise: its mmap
    threshold rises to the size of the largest block freed, so such pieces come from the heap."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)


def _first_stop(text: str, stops: list[str]) -> int | None:
    found = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    return min(found) if found else None


def _stop_prefix_length(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-size:]):
                longest = size
                break
    return longest
