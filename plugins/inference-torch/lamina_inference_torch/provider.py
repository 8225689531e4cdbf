"""The InferenceProvider: OpenAI requests in, engine sequences out, OpenAI dicts (or chunk streams) back."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lamina.apis.inference.provider import chat_choice, chat_chunk, chat_completion, new_id, text_completion, usage
from lamina.apis.inference.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelInfo
from lamina.config import ConfigError
from lamina.errors import bad_request, not_found
from lamina.specs import Deps

from lamina_inference_torch import cache
from lamina_inference_torch.config import TorchConfig
from lamina_inference_torch.engine import Engine, Event, Failed, Finished, Sequence, TextDelta, release_free_memory
from lamina_inference_torch.grammar import GrammarError, Grammars, build_constraint
from lamina_inference_torch.model import Decoder, prepare_tensors, resolve_quantization
from lamina_inference_torch.sampling import SamplingParams, TokenChoice
from lamina_inference_torch.tokenizer import TextTokenizer, load_tokenizer
from lamina_inference_torch.tools import call_format, may_open_tool_call, parse_tool_calls
from lamina_inference_torch.weights import UnsupportedArchitecture, hf_config, load_model, model_name

log = logging.getLogger("lamina.torch")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class ServedModel:
    name: str
    path: Path
    tokenizer: TextTokenizer
    engine: Engine
    grammars: Grammars | None = None  # made on the model's first constrained request


def load_served_model(path: Path, config: TorchConfig, cache_dir: Path | None = None) -> ServedModel:
    """Blocking: read the model (from its converted copy in `cache_dir`, if there is a good one), start an engine
    thread that builds the decoder, and wait until it has. Without a good copy, the weights are converted and
    the copy written there for next time."""
    name = model_name(path)
    started = time.perf_counter()
    # Under 'auto' the cache file is keyed by the setting: which quantization it resolves to is the file's own.
    fp16_copy = config.quantize == "int4" or (config.quantize != "none" and config.fp16_above_rows is not None)
    dtype = _DTYPES[config.dtype]
    settings = {"quantize": config.quantize, "dtype": config.dtype, "fp16_copy": fp16_copy}
    file = key = converted = None
    if cache_dir is not None:
        key = cache.cache_key(path, settings)
        file = cache.cache_file(cache_dir, name, f"{config.quantize}-{config.dtype}{'-fp16' if fp16_copy else ''}")
        converted = cache.load(file, key)
    if converted is not None:
        log.info("%s: read converted weights from %s in %.1f s", name, file, time.perf_counter() - started)
        tokenizer = converted.tokenizer
    elif path.suffix == ".gguf":  # the vocabulary is in the file: read it once, here (the tensors are read later)
        loaded = load_model(path, progress=log_progress(f"{name}: reading {path.name}"))
        tokenizer = load_tokenizer(path, loaded.gguf_metadata)
        log.info("%s: read %s in %.1f s", name, path, time.perf_counter() - started)
    else:
        hf_config(path)  # an unsupported architecture fails here, before anything else is read
        loaded, tokenizer = None, load_tokenizer(path, None)

    def build() -> Decoder:
        nonlocal converted, loaded
        if converted is None:
            loaded = loaded or load_model(path, progress=log_progress(f"{name}: reading {path.name}"))
            converting = time.perf_counter()
            quantize = resolve_quantization(config.quantize, loaded.gguf_metadata)
            log_converting = log_progress(f"{name}: converting weights ({quantize})")

            def converting_progress(done: int, total: int) -> None:
                log_converting(done, total)
                release_free_memory()  # each layer's float32 weights, freed in pieces the heap would keep

            tensors = prepare_tensors(
                loaded.config,
                loaded.weights,
                dtype=dtype,
                quantize=quantize,
                fp16_above_rows=config.fp16_above_rows,
                progress=converting_progress,
            )
            converted = cache.Converted(loaded.config, tensors, tokenizer)
            loaded = None  # the GGUF's map and metadata: ~130 MB for SmolLM2, not needed from here on
            release_free_memory()
            log.info("%s: converted weights in %.1f s", name, time.perf_counter() - converting)
            if file is not None and key is not None:
                writing = time.perf_counter()
                try:
                    cache.save(file, key, converted)
                    size = file.stat().st_size / 1e6
                    log.info(
                        "%s: wrote %.0f MB of converted weights to %s in %.1f s",
                        name,
                        size,
                        file,
                        time.perf_counter() - writing,
                    )
                except Exception as error:  # a read-only or full disk costs the next start time, nothing else
                    log.warning("%s: could not keep the converted weights at %s: %s", name, file, error)
        decoder = Decoder(
            converted.config,
            converted.tensors,
            dtype=dtype,
            max_batch=config.max_batch,
            context_length=config.context_length,
            fp16_above_rows=config.fp16_above_rows,
        )
        # The decoder holds what it runs on; the float16 copies in `converted` must go once they are packed.
        converted = None
        return decoder

    threads = config.threads or os.cpu_count() or 1
    engine = Engine(
        build,
        tokenizer,
        threads=threads,
        prefill_chunk=config.prefill_chunk,
        name=name,
        prefix_cache_bytes=config.prefix_cache_mb << 20,
    )
    try:
        engine.wait_ready()
    except BaseException:
        engine.close()
        raise
    log.info("%s: ready in %.1f s", name, time.perf_counter() - started)
    return ServedModel(name, path, tokenizer, engine)


def log_progress(what: str, every: float = 2.0) -> Callable[[int, int], None]:
    """A `progress(done, total)` callback that logs `what` with its percentage at most every `every` seconds."""
    started = last = time.perf_counter()

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= every and done < total:
            last = now
            log.info("%s: %d/%d (%.0f%%, %.0f s)", what, done, total, 100 * done / total, now - started)

    return progress


async def resolve_model_path(name_or_path: str) -> Path:
    from lamina.pulls import ensure_model

    return await ensure_model(name_or_path)


async def create_provider(config: TorchConfig, deps: Deps | None = None) -> TorchProvider:
    models: dict[str, ServedModel] = {}
    cache_dir = None
    if isinstance(config.weight_cache, Path):
        cache_dir = config.weight_cache.expanduser()
    elif config.weight_cache and deps is not None:
        cache_dir = deps.data_dir / "converted"
    try:
        for entry in config.models:
            path = await resolve_model_path(entry)
            try:
                served = await asyncio.to_thread(load_served_model, path, config, cache_dir)
            except UnsupportedArchitecture as error:  # a configuration mistake: one line at start, no traceback
                raise ConfigError(f"inline::torch model {entry!r}: {error}") from None
            if served.name in models:
                served.engine.close()
                raise ValueError(f"two configured models are both named {served.name!r}")
            models[served.name] = served
    except BaseException:
        for served in models.values():
            served.engine.close()
        raise
    return TorchProvider(models, config)


class TorchProvider:
    def __init__(self, models: dict[str, ServedModel], config: TorchConfig) -> None:
        self.models = models
        self.config = config

    async def list_models(self) -> list[ModelInfo]:
        return [
            ModelInfo(id=name, metadata={"context_length": m.engine.context_length, "path": str(m.path)})
            for name, m in self.models.items()
        ]

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        raise bad_request(f"model '{request.model}' is a text generation model and does not serve embeddings")

    async def close(self) -> None:
        for served in self.models.values():
            await asyncio.to_thread(served.engine.close)

    def _served(self, model: str) -> ServedModel:
        if model not in self.models:
            raise not_found(f"model '{model}' is not served by this provider", param="model")
        return self.models[model]

    # Chat

    async def chat_completion(self, request: ChatCompletionRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        served = self._served(request.model)
        params = sampling_params(request, request.top_logprobs or 0 if request.logprobs else None, self.config)
        tools = [t.model_dump(exclude_none=True) for t in request.tools or []]
        use_tools = bool(tools) and request.tool_choice != "none"
        try:
            prompt_text = served.tokenizer.render_chat(
                [template_message(m.model_dump(exclude_none=True)) for m in request.messages], tools or None
            )
        except Exception as error:
            raise bad_request(f"could not apply the chat template: {error}", param="messages") from error
        prompt = served.tokenizer.encode(prompt_text)
        runs = Runs(served, [prompt], request.n or 1, params, request.token_limit, request.stop, truncation(request))
        await constrain(runs, request, tools)
        known_names = {t["function"]["name"] for t in tools} or None
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return self._chat_stream(runs, request.model, use_tools, known_names, include_usage)
        results = await runs.collect()
        choices = []
        for index, result in enumerate(results):
            content, calls = result.text, []
            if use_tools:
                content, calls = parse_tool_calls(result.text, known_names)
            logprobs = {"content": chat_logprobs(served.tokenizer, result.tokens)} if request.logprobs else None
            finish = "tool_calls" if calls else result.finish_reason
            choices.append(chat_choice(index, content, finish, tool_calls=calls or None, logprobs=logprobs))
        return chat_completion(request.model, choices, runs.usage(results))

    async def _chat_stream(
        self, runs: Runs, model: str, use_tools: bool, known_names: set[str] | None, include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        chunk_id, created = new_id("chatcmpl"), int(time.time())
        tokenizer = runs.served.tokenizer
        held = [""] * runs.count  # text held back while it may still be a tool call
        holding = [use_tools] * runs.count
        completion_tokens, cached = 0, [0] * runs.count

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None):
            choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
            return chat_chunk(chunk_id, model, created, [choice])

        async with runs.events() as events:
            for index in range(runs.count):
                yield chunk(index, {"role": "assistant", "content": ""})
            async for index, event in events:
                if isinstance(event, TextDelta):
                    logprobs = (
                        {"content": chat_logprobs(tokenizer, event.tokens)}
                        if runs.params.top_logprobs is not None
                        else None
                    )
                    if holding[index]:
                        held[index] += event.text
                        if may_open_tool_call(held[index]):
                            continue
                        holding[index] = False
                        event.text, held[index] = held[index], ""
                    if event.text or logprobs:
                        yield chunk(index, {"content": event.text}, logprobs=logprobs)
                elif isinstance(event, Finished):
                    completion_tokens += event.completion_tokens
                    cached[index] = event.cached_tokens
                    finish = event.reason
                    if held[index]:
                        content, calls = parse_tool_calls(held[index], known_names)
                        if calls:
                            if content:  # text a Hermes-style model wrote before its <tool_call> tags
                                yield chunk(index, {"content": content})
                            deltas = [{"index": i, **call} for i, call in enumerate(calls)]
                            yield chunk(index, {"tool_calls": deltas})
                            finish = "tool_calls"
                        else:
                            yield chunk(index, {"content": held[index]})
                    yield chunk(index, {}, finish)
        if include_usage:
            yield chat_chunk(chunk_id, model, created, [], runs.usage_of(completion_tokens, cached))

    # Text completions

    async def completion(self, request: CompletionRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        served = self._served(request.model)
        if request.suffix:
            raise bad_request("suffix (fill-in-the-middle) is not supported by inline::torch", param="suffix")
        params = sampling_params(request, request.logprobs, self.config)
        prompts = completion_prompts(request.prompt, served.tokenizer)
        runs = Runs(
            served, prompts, request.n or 1, params, request.max_tokens, request.stop, truncation(request), default=16
        )
        echoes = [served.tokenizer.decode(p) if request.echo else "" for p in prompts]
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return self._completion_stream(runs, request.model, echoes, include_usage)
        results = await runs.collect()
        choices = []
        for index, result in enumerate(results):
            logprobs = None
            if request.logprobs is not None:
                logprobs = completion_logprobs(served.tokenizer, result.tokens, len(echoes[index // runs.n]))
            text = echoes[index // runs.n] + result.text
            choices.append({"index": index, "text": text, "finish_reason": result.finish_reason, "logprobs": logprobs})
        return text_completion(request.model, choices, runs.usage(results))

    async def _completion_stream(
        self, runs: Runs, model: str, echoes: list[str], include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        chunk_id, created = new_id("cmpl"), int(time.time())
        completion_tokens, cached = 0, [0] * runs.count

        def chunk(index: int, text: str, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
            choice = {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}
            return {
                "id": chunk_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": None,
            }

        async with runs.events() as events:
            for index in range(runs.count):
                if echoes[index // runs.n]:
                    yield chunk(index, echoes[index // runs.n])
            async for index, event in events:
                if isinstance(event, TextDelta):
                    logprobs = None
                    if runs.params.top_logprobs is not None:
                        logprobs = completion_logprobs(runs.served.tokenizer, event.tokens, 0)
                    yield chunk(index, event.text, logprobs=logprobs)
                elif isinstance(event, Finished):
                    completion_tokens += event.completion_tokens
                    cached[index] = event.cached_tokens
                    yield chunk(index, "", event.reason)
        if include_usage:
            yield {
                "id": chunk_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [],
                "usage": runs.usage_of(completion_tokens, cached),
            }


@dataclass
class RunResult:
    text: str
    tokens: list[TokenChoice]
    finish_reason: str
    completion_tokens: int
    cached_tokens: int = 0


class Runs:
    """The engine sequences behind one request: n per prompt, their events merged onto one asyncio queue."""

    def __init__(
        self,
        served: ServedModel,
        prompts: list[list[int]],
        n: int,
        params: SamplingParams,
        max_tokens: int | None,
        stop: str | list[str] | None,
        truncate: bool = False,
        default: int | None = None,
    ) -> None:
        """`max_tokens` as the request gave it (None: up to `default`, or the rest of the context), cut to what
        fits only when it is a default. `truncate`: drop the oldest prompt tokens to make room instead of failing."""
        context = served.engine.context_length
        fitted = []
        for prompt in prompts:
            if not prompt:
                raise bad_request("the prompt is empty", param="prompt")
            wanted = max_tokens or 0
            if truncate:
                # Keep room for max_tokens (or a quarter of the context when none is asked): the newest tokens stay.
                room = min(max_tokens or context // 4, context - 1)
                prompt = prompt[max(0, len(prompt) - (context - room)) :]
            elif len(prompt) + wanted > context or len(prompt) >= context:
                asked = f" + max_tokens {max_tokens} = {len(prompt) + wanted}" if max_tokens else ""
                raise bad_request(
                    f"this model's context length is {context} tokens, but the request needs {len(prompt)} "
                    f"prompt tokens{asked}; shorten the prompt{', lower max_tokens' if max_tokens else ''} "
                    'or send "truncation": "auto" to drop the oldest prompt tokens',
                    param="max_tokens" if max_tokens and len(prompt) < context else "messages",
                    code="context_length_exceeded",
                )
            fitted.append(prompt)
        prompts = fitted
        max_tokens = max_tokens or default
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise bad_request("stop: give at most 4 non-empty stop sequences", param="stop")
        self.served, self.prompts, self.n, self.params = served, prompts, n, params
        self.count = len(prompts) * n
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.sequences = []
        for index in range(self.count):
            prompt = prompts[index // n]
            seed = None if params.seed is None else params.seed + index % n
            sequence_params = SamplingParams(**{**params.__dict__, "seed": seed})
            limit = context - len(prompt) if max_tokens is None else min(max_tokens, context - len(prompt))
            self.sequences.append(Sequence(prompt, sequence_params, limit, stops, emit=self._emitter(loop, index)))

    def _emitter(self, loop: asyncio.AbstractEventLoop, index: int) -> Callable[[Event], None]:
        def emit(event: Event) -> None:
            loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))

        return emit

    def usage(self, results: list[RunResult]) -> dict[str, Any]:
        return self.usage_of(sum(r.completion_tokens for r in results), [r.cached_tokens for r in results])

    def usage_of(self, completion_tokens: int, cached: list[int]) -> dict[str, Any]:
        """Usage with OpenAI's `prompt_tokens_details.cached_tokens`: per prompt, its first sequence's count (the
        prompt is counted once however many sequences `n` runs)."""
        answer: dict[str, Any] = usage(self.prompt_tokens, completion_tokens)
        answer["prompt_tokens_details"] = {"cached_tokens": sum(cached[:: self.n])}
        return answer

    def events(self) -> _EventStream:
        return _EventStream(self)

    async def collect(self) -> list[RunResult]:
        texts: list[list[str]] = [[] for _ in range(self.count)]
        tokens: list[list[TokenChoice]] = [[] for _ in range(self.count)]
        results: list[RunResult | None] = [None] * self.count
        async with self.events() as events:
            async for index, event in events:
                if isinstance(event, TextDelta):
                    texts[index].append(event.text)
                    tokens[index].extend(event.tokens)
                elif isinstance(event, Finished):
                    text = "".join(texts[index])
                    results[index] = RunResult(
                        text, tokens[index], event.reason, event.completion_tokens, event.cached_tokens
                    )
        return results  # type: ignore[return-value]


class _EventStream:
    """Submits the sequences on entry, yields (index, event) until all finish, cancels leftovers on exit."""

    def __init__(self, runs: Runs) -> None:
        self.runs = runs

    async def __aenter__(self) -> AsyncIterator[tuple[int, Event]]:
        for sequence in self.runs.sequences:
            self.runs.served.engine.submit(sequence)
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[int, Event]]:
        remaining = self.runs.count
        pending: collections.deque[tuple[int, Event]] = collections.deque()
        queue = self.runs.queue
        while remaining:
            if not pending:
                pending.append(await queue.get())
                while not queue.empty():
                    pending.append(queue.get_nowait())
            index, event = pending.popleft()
            if isinstance(event, Failed):
                raise event.error
            # A consumer that fell behind gets the tokens that piled up as one delta, not one chunk each.
            while isinstance(event, TextDelta) and pending and pending[0][0] == index:
                following = pending[0][1]
                if not isinstance(following, TextDelta):
                    break
                pending.popleft()
                event = TextDelta(event.text + following.text, event.tokens + following.tokens)
            if isinstance(event, Finished):
                remaining -= 1
            yield index, event

    async def __aexit__(self, *exc: object) -> None:
        for sequence in self.runs.sequences:
            if not sequence.done:
                self.runs.served.engine.cancel(sequence)


# Request translation


async def constrain(runs: Runs, request: ChatCompletionRequest, tools: list[dict[str, Any]]) -> None:
    """Give every sequence of `runs` a matcher of the grammar the request's `response_format` and `tool_choice`
    ask for (none when the answer is free text); a schema that cannot be enforced is a 400 naming its field."""
    response_format = request.response_format.model_dump(exclude_none=True) if request.response_format else None
    served = runs.served
    try:
        constraint = build_constraint(
            response_format, tools, request.tool_choice, call_format(served.tokenizer.chat_template)
        )
        if constraint is None:
            return
        if served.grammars is None:
            served.grammars = Grammars(served.tokenizer, served.engine.decoder.vocab_size)
        matchers = await asyncio.to_thread(served.grammars.matchers, constraint, runs.count)
    except GrammarError as error:
        raise bad_request(str(error), param=error.param) from None
    for sequence, matcher in zip(runs.sequences, matchers, strict=True):
        sequence.matcher = matcher


def sampling_params(
    request: ChatCompletionRequest | CompletionRequest, top_logprobs: int | None, config: TorchConfig
) -> SamplingParams:
    """OpenAI's sampling fields plus the common extensions top_k, min_p and repetition_penalty."""
    extra = request.model_extra or {}
    top_k = extra.get("top_k", 0)
    min_p = extra.get("min_p", 0.0)
    repetition_penalty = extra.get("repetition_penalty", 1.0)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise bad_request("top_k must be an integer >= 0 (0 disables it)", param="top_k")
    if not isinstance(min_p, int | float) or isinstance(min_p, bool) or not 0 <= min_p <= 1:
        raise bad_request("min_p must be a number between 0 and 1", param="min_p")
    if (
        not isinstance(repetition_penalty, int | float)
        or isinstance(repetition_penalty, bool)
        or not (0 < repetition_penalty <= 10)
    ):
        raise bad_request("repetition_penalty must be a number in (0, 10]", param="repetition_penalty")
    bias: dict[int, float] = {}
    for key, value in (getattr(request, "logit_bias", None) or {}).items():
        if not key.lstrip("-").isdigit():
            raise bad_request(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias")
        bias[int(key)] = max(-100.0, min(100.0, float(value)))
    return SamplingParams(
        temperature=config.default_temperature if request.temperature is None else request.temperature,
        top_p=config.default_top_p if request.top_p is None else request.top_p,
        top_k=top_k,
        min_p=float(min_p),
        repetition_penalty=float(repetition_penalty),
        frequency_penalty=request.frequency_penalty or 0.0,
        presence_penalty=request.presence_penalty or 0.0,
        seed=request.seed,
        logit_bias=bias,
        top_logprobs=top_logprobs,
    )


def truncation(request: ChatCompletionRequest | CompletionRequest) -> bool:
    """The Responses API's `truncation` setting, as an extension: "auto" drops the oldest prompt tokens that do not
    fit; "disabled" (the default) makes a prompt that does not fit a 400."""
    value = (request.model_extra or {}).get("truncation", "disabled")
    if value not in ("auto", "disabled"):
        raise bad_request('truncation must be "auto" or "disabled"', param="truncation")
    return value == "auto"


def template_message(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI message as chat templates expect it: text content, tool-call arguments as objects."""
    content = message.get("content")
    if isinstance(content, list):
        message["content"] = "".join(p.get("text", "") for p in content if p.get("type") == "text")
    elif content is None:
        message["content"] = ""
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        with contextlib.suppress(json.JSONDecodeError, TypeError):
            function["arguments"] = json.loads(function.get("arguments", "{}"))
    return message


def completion_prompts(prompt: Any, tokenizer: TextTokenizer) -> list[list[int]]:
    if isinstance(prompt, str):
        return [tokenizer.encode_prompt(prompt)]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    prompts = []
    for item in prompt:
        prompts.append(tokenizer.encode_prompt(item) if isinstance(item, str) else list(item))
    if not prompts:
        raise bad_request("the prompt is empty", param="prompt")
    return prompts


def _token_entry(tokenizer: TextTokenizer, token: int, logprob: float) -> dict[str, Any]:
    text = tokenizer.decode([token], skip_special=False)
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def chat_logprobs(tokenizer: TextTokenizer, tokens: list[TokenChoice]) -> list[dict[str, Any]]:
    entries = []
    for choice in tokens:
        entry = _token_entry(tokenizer, choice.token, choice.logprob)
        entry["top_logprobs"] = [_token_entry(tokenizer, t, lp) for t, lp in choice.top or []]
        entries.append(entry)
    return entries


def completion_logprobs(tokenizer: TextTokenizer, tokens: list[TokenChoice], offset: int) -> dict[str, Any]:
    texts = [tokenizer.decode([c.token], skip_special=False) for c in tokens]
    offsets = []
    for text in texts:
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": texts,
        "token_logprobs": [c.logprob for c in tokens],
        "top_logprobs": [{tokenizer.decode([t], skip_special=False): lp for t, lp in c.top or []} for c in tokens],
        "text_offset": offsets,
    }
