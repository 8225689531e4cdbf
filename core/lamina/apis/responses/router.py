"""The responses router: context (`previous_response_id`, `conversation`), storage, background jobs and the
event stream around an orchestrator (the `responses` provider) that runs the model-and-tools loop.

Stored responses live under `responses/<id>`. A streamed or background response is written `in_progress` before
its first event and rewritten once at the end, so a crash never leaves one that looks finished; a conversation's
new items (the response's input and output) are appended in one write, just before that final record. Every
read, list and delete goes through `fetch`, the one place an access check belongs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from pydantic import BaseModel

from lamina import auth
from lamina.apis.conversations.router import ConversationsRouter
from lamina.apis.conversations.types import Item, ItemReference, ItemsQuery, new_id, normalize_item, page
from lamina.apis.prompts.router import PromptsRouter
from lamina.apis.responses.provider import ResponsesProvider, Turn
from lamina.apis.responses.types import CreateResponse, ListQuery, ResponsesConfig, StoredResponse
from lamina.errors import LaminaError, bad_request, not_found
from lamina.specs import RouterDeps
from lamina.storage import Registry
from lamina.storage.lease import Lease, LeaseLost, Stopping, claim_next

log = logging.getLogger("lamina")
BACKGROUND = "responses.background"
HEARTBEATS = "responses-heartbeats/"  # <worker prefix> -> {"until": epoch seconds}: the server is alive until then
FOLLOW_SECONDS = 0.05  # how often a streamed background response's record is read for news
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
FINISHED = frozenset({"completed", "incomplete", "failed", "cancelled"})


def initial_response(request: CreateResponse, response_id: str) -> dict[str, Any]:
    """The response object before any output: OpenAI's fields, with the request's parameters echoed."""
    conversation = request.conversation_id
    tool_choice = request.tool_choice
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": request.background,
        "completed_at": None,
        "conversation": {"id": conversation} if conversation else None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "metadata": request.metadata or {},
        "model": request.model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls,
        "previous_response_id": request.previous_response_id,
        "prompt": request.prompt.model_dump(exclude_none=True) if request.prompt else None,
        "prompt_cache_key": request.prompt_cache_key,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": request.safety_identifier,
        "service_tier": request.service_tier or "default",
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "text": {"format": request.format.wire()},
        "tool_choice": tool_choice.model_dump(exclude_none=True) if isinstance(tool_choice, BaseModel) else tool_choice,
        "tools": [tool.model_dump(mode="json", exclude_none=True, by_alias=True) for tool in request.tools],
        "top_logprobs": request.top_logprobs or 0,
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "truncation": request.truncation,
        "usage": None,
        "user": request.user,
    }


def failed_response(response: dict[str, Any], exc: LaminaError) -> dict[str, Any]:
    # A failed response's `error.code` is one of OpenAI's few codes; the message keeps our detail.
    code = "rate_limit_exceeded" if exc.status == 429 else "server_error" if exc.status >= 500 else "invalid_prompt"
    error = {"code": code, "message": exc.message}
    return {**response, "status": "failed", "error": error}


class ResponsesRouter:
    def __init__(self, config: ResponsesConfig, providers: dict[str, ResponsesProvider], deps: RouterDeps) -> None:
        self.config = config
        self.providers = providers
        self.conversations = deps.api(ConversationsRouter)
        self.prompts = deps.api(PromptsRouter)
        self.records = Registry(deps.storage.kv, "responses/", StoredResponse, key=lambda r: r.id)
        self.kv = deps.storage.kv
        self.jobs = deps.storage.jobs
        self.auth = deps.auth
        self.shared = deps.shared  # a cancellation in any process stops the response where it runs
        self.running: dict[str, asyncio.Task[None]] = {}  # background responses this process is running
        self.workers: list[asyncio.Task[None]] = []
        self.heartbeat: asyncio.Task[None] | None = None
        self.wakeup = asyncio.Event()
        self.stopping = False
        self.worker_prefix = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def start(self) -> None:
        if not self.providers:
            return  # nothing could run a response; stored ones can still be read
        await self._beat()  # before any response names this process as its runner
        self.heartbeat = asyncio.create_task(self._heartbeats(), name="responses heartbeat")
        self.workers = [
            asyncio.create_task(self._work(f"{self.worker_prefix}:{i}"), name=f"responses worker {i}")
            for i in range(self.config.background_workers)
        ]

    async def close(self) -> None:
        self.stopping = True
        tasks = [*self.workers, *([self.heartbeat] if self.heartbeat else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.heartbeat is not None:
            with contextlib.suppress(Exception):
                await self.kv.delete(HEARTBEATS + self.worker_prefix)

    # -- liveness: a streamed response is `in_progress` only while the process generating it lives

    async def _beat(self) -> None:
        until = time.time() + self.config.heartbeat_seconds
        await self.kv.set(HEARTBEATS + self.worker_prefix, {"until": until})

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds / 3)
            try:
                await self._beat()
            except Exception:
                log.exception("the responses heartbeat could not be written")

    async def _alive(self, runner: str) -> bool:
        """Whether the process `runner` (`host:pid:nonce`) may still be generating: its heartbeat is fresh, and,
        when it ran on this host, its process exists."""
        if runner == self.worker_prefix:
            return True
        host, _, rest = runner.partition(":")
        pid = rest.partition(":")[0]
        if host == socket.gethostname() and pid.isdigit() and not _process_exists(int(pid)):
            return False
        beat = await self.kv.get(HEARTBEATS + runner)
        return isinstance(beat, dict) and float(beat.get("until") or 0) > time.time()

    async def _settle(self, record: StoredResponse) -> StoredResponse:
        """`record`, or, when the process generating it died mid-way, the record failed (and stored so)."""
        if record.runner is None or record.response.get("status") != "in_progress" or await self._alive(record.runner):
            return record
        error = {"code": "server_error", "message": ORPHANED}
        response = {**record.response, "status": "failed", "error": error, "output": [], "usage": None}
        failed = record.model_copy(update={"response": response, "runner": None})
        log.warning("response %s: its server (%s) stopped while generating it; marked failed", record.id, record.runner)
        await self.records.put(failed)
        return failed

    def provider(self) -> ResponsesProvider:
        if self.config.provider_id is not None:
            return self.providers[self.config.provider_id]
        if not self.providers:
            raise LaminaError(
                "no responses provider is configured; add one under providers.responses (e.g. inline::responses "
                "from the lamina-responses package)",
                status=501,
                type="not_implemented",
                code="no_responses_provider",
            )
        return next(iter(self.providers.values()))

    # -- stored responses

    def allowed(self, record: StoredResponse) -> bool:
        """Whether this request may see `record`: the one access check, used by `fetch` and by listings (auth
        decides it from `record.owner`; without auth, everything is visible)."""
        return auth.can("read", "response", record.id, record.owner)

    async def fetch(self, response_id: str, *, param: str = "response_id") -> StoredResponse:
        """The stored response `response_id`, or a 404: every access to a stored response starts here."""
        record = await self.records.get(response_id) if response_id else None
        if record is None or not self.allowed(record):
            raise not_found(f"response '{response_id}' not found", param=param)
        return await self._settle(record)

    async def retrieve(self, response_id: str) -> dict[str, Any]:
        return (await self.fetch(response_id)).response

    async def delete(self, response_id: str) -> dict[str, Any]:
        record = await self.fetch(response_id)
        auth.require("delete", "response", record.id, record.owner)
        if record.response.get("background") and record.response.get("status") not in FINISHED:
            await self.cancel(record.id)
        await self.records.delete(record.id)
        return {"id": record.id, "object": "response.deleted", "deleted": True}

    async def input_items(self, response_id: str, query: ItemsQuery) -> dict[str, Any]:
        return page((await self.fetch(response_id)).input_items, query)

    async def list_responses(self, query: ListQuery) -> dict[str, Any]:
        records = sorted((r for r in await self.records.list() if self.allowed(r)), key=lambda r: r.order)
        records = [await self._settle(r) if r.runner else r for r in records]
        responses = [r.response for r in records if query.model is None or r.response.get("model") == query.model]
        return page(responses, ItemsQuery(limit=query.limit, order=query.order, after=query.after))

    async def history(self, record: StoredResponse) -> list[Item]:
        """Everything the model saw and said up to and including `record`: the chain of previous responses'
        inputs and outputs (their instructions excepted, as OpenAI does)."""
        if conversation := record.response.get("conversation"):
            with contextlib.suppress(LaminaError):  # a deleted conversation leaves the response's own items
                return await self.conversations.items(conversation["id"])
        chain = [record]
        while (previous := chain[-1].response.get("previous_response_id")) and len(chain) < self.config.max_chain:
            earlier = await self.records.get(previous)
            if earlier is None:
                break  # deleted: the chain starts after it
            chain.append(earlier)
        return [item for r in reversed(chain) for item in (*r.input_items, *_outputs(r.response))]

    # -- creating

    async def prepare(self, request: CreateResponse, response_id: str | None = None) -> tuple[Turn, list[Item]]:
        """The turn to hand the orchestrator, and the normalised input items to store."""
        if request.previous_response_id and request.conversation:
            raise bad_request("give `previous_response_id` or `conversation`, not both", param="conversation")
        if request.prompt is not None:
            # The stored prompt, rendered, leads the instructions; the request's own follow it.
            rendered = await self.prompts.render_prompt(
                request.prompt.id, request.prompt.version, request.prompt.variables
            )
            instructions = "\n\n".join(text for text in (rendered, request.instructions) if text)
            request = request.model_copy(update={"instructions": instructions})
        context: list[Item] = []
        if request.previous_response_id:
            previous = await self.fetch(request.previous_response_id, param="previous_response_id")
            context = await self.history(previous)
        elif request.conversation_id is not None:
            context = await self.conversations.items(request.conversation_id, param="conversation")
        raw = request.input
        if isinstance(raw, str):
            items: list[Item] = [normalize_item_text(raw)] if raw else []
        else:
            items = []
            known = {item.get("id"): item for item in context}
            for index, item in enumerate(raw):
                if isinstance(item, ItemReference):
                    if item.id not in known:
                        raise bad_request(
                            f"input.{index}.id: no item '{item.id}' in the context", param=f"input.{index}.id"
                        )
                    items.append(known[item.id])
                else:
                    items.append(normalize_item(item))
        if not items and not context:
            raise bad_request("`input` must not be empty", param="input")
        _check_call_outputs(context, items)
        response = initial_response(request, response_id or new_id("resp"))
        auth.require("create", "response", response["id"], auth.owner())
        return Turn(request=request, response=response, context=[*context, *items], stream=request.stream), items

    async def create(self, request: CreateResponse) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """A response: its final object, or (`stream`) its events."""
        if request.background:
            queued = await self._queue(request)
            return self._follow(queued) if request.stream else queued
        provider = self.provider()
        turn, items = await self.prepare(request)
        events = await provider.respond(turn)
        run = self._run(turn, items, events, announce=request.stream)
        if request.stream:
            return run
        final: dict[str, Any] = turn.response
        async with aclosing(run):
            async for event in run:
                if event["type"] in TERMINAL_EVENTS:
                    final = event["response"]
        return final

    async def _run(
        self,
        turn: Turn,
        items: list[Item],
        events: AsyncIterator[dict[str, Any]],
        *,
        announce: bool,
        lease: Lease | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Relay the orchestrator's events with sequence numbers; store the response (`announce`: in_progress
        first, since the client learns its id before it ends) and append to its conversation."""
        response, request = turn.response, turn.request
        numbers = itertools.count()
        owner, order = auth.owner(), time.time_ns()

        def record(response: dict[str, Any], runner: str | None = None) -> StoredResponse:
            # Made only when stored, from what this router made (the response, the normalised items, the caller's
            # owner): nothing to validate again.
            return StoredResponse.model_construct(
                id=response["id"],
                response=response,
                input_items=items,
                request=None,
                order=order,
                owner=owner,
                runner=runner,
            )

        if request.store and announce:
            await self.records.put(record(response, self.worker_prefix))
        finished = False
        try:
            if announce:  # the client's first events; a response returned whole, or run in the background, has none
                yield {"type": "response.created", "response": {**response}, "sequence_number": next(numbers)}
                yield {"type": "response.in_progress", "response": {**response}, "sequence_number": next(numbers)}
            async with aclosing(events):  # type: ignore[type-var]
                try:
                    async for event in events:
                        event["sequence_number"] = next(numbers)
                        if event.get("type") in TERMINAL_EVENTS:
                            await self._finish(turn, record, items, event["response"], lease, announce)
                            finished = True
                        yield event
                except (LeaseLost, Stopping):
                    raise  # a background response cancelled, taken over or stopping: nothing more to write
                except Exception as caught:
                    if finished:
                        raise
                    exc = caught if isinstance(caught, LaminaError) else _internal(caught)
                    log.warning("response %s failed: %s", response["id"], exc.message)
                    failed = failed_response(response, exc)
                    await self._finish(turn, record, items, failed, lease, announce)
                    finished = True
                    if not announce and lease is None:
                        raise exc from None  # not streamed: the client gets the error (a 502 naming the provider)
                    error = {"code": exc.code or exc.type, "message": exc.message, "param": exc.param}
                    yield {"type": "error", **error, "sequence_number": next(numbers)}
                    yield {"type": "response.failed", "response": failed, "sequence_number": next(numbers)}
        finally:
            if not finished and request.store and announce:
                # The client left (or the server is stopping): the work stops, and the record says so.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.records.put(record({**response, "status": "cancelled"})))

    async def _finish(
        self,
        turn: Turn,
        record: Callable[[dict[str, Any]], StoredResponse],
        items: list[Item],
        final: dict[str, Any],
        lease: Lease | None,
        announced: bool = False,
    ) -> None:
        if lease is not None:
            await lease.check()  # a cancelled background response writes nothing more
        if announced and turn.request.store and await self.records.get(final["id"]) is None:
            return  # deleted while it streamed: it stays deleted
        conversation = turn.request.conversation_id
        if conversation is not None and final.get("status") != "failed":
            await self.conversations.append(conversation, [*items, *_outputs(final)])
        if turn.request.store:
            await self.records.put(record(final))

    # -- background responses

    async def _queue(self, request: CreateResponse) -> dict[str, Any]:
        if not request.store:
            raise bad_request("a background response must be stored (`store` true)", param="store")
        self.provider()  # 501 now rather than a response queued forever
        turn, items = await self.prepare(request)
        response = {**turn.response, "status": "queued"}
        record = StoredResponse(
            id=response["id"],
            response=response,
            input_items=items,
            request=request.model_dump(mode="json"),
            owner=auth.owner(),
        )
        # The job first, carrying the record: a crash between the two writes leaves a job that writes the record
        # itself, never a record `queued` forever.
        await self.jobs.enqueue(BACKGROUND, record.id, {"record": record.model_dump(mode="json")})
        await self.records.put(record)
        self.wakeup.set()
        return response

    async def _follow(self, queued: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """A streamed background response: its events as the stored record moves (the job may run in any process
        sharing the storage); leaving stops the following, not the response."""
        numbers = itertools.count()
        yield {"type": "response.created", "response": queued, "sequence_number": next(numbers)}
        yield {"type": "response.queued", "response": queued, "sequence_number": next(numbers)}
        status = "queued"
        while True:
            record = await self.records.get(queued["id"])
            response = record.response if record is not None else {**queued, "status": "cancelled"}
            if response["status"] == "in_progress" and status == "queued":
                yield {"type": "response.in_progress", "response": response, "sequence_number": next(numbers)}
            status = response["status"]
            if status in FINISHED:
                break
            await asyncio.sleep(FOLLOW_SECONDS)
        for event in replay(response):
            yield {**event, "sequence_number": next(numbers)}

    async def cancel(self, response_id: str) -> dict[str, Any]:
        record = await self.fetch(response_id)
        auth.require("update", "response", record.id, record.owner)
        if not record.response.get("background"):
            raise bad_request("only background responses can be cancelled", param="response_id")
        if record.response.get("status") in FINISHED:
            return record.response
        await self.jobs.cancel(BACKGROUND, record.id)
        await self.shared.cancel(BACKGROUND, record.id)
        task = self.running.get(record.id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        cancelled = {**record.response, "status": "cancelled"}
        await self.records.put(record.model_copy(update={"response": cancelled}))
        return cancelled

    async def _work(self, worker: str) -> None:
        lease_seconds = self.config.background_lease_seconds
        while not self.stopping:
            lease = await claim_next(self.jobs, BACKGROUND, worker, lease_seconds, self.wakeup, lambda: self.stopping)
            if lease is None:
                continue
            job = lease.job
            task = asyncio.create_task(self._background(job.key, job.payload.get("record"), lease))
            self.running[job.key] = task
            self.shared.watch(BACKGROUND, job.key, task)
            try:
                await asyncio.shield(task)
                await self.jobs.finish(job, worker)
            except (LeaseLost, asyncio.CancelledError) as exc:
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                if isinstance(exc, asyncio.CancelledError) and self.stopping:
                    await self.jobs.release(job, worker)  # resumed at once by the next server
                    raise
            except Stopping:
                await self.jobs.release(job, worker)
                return
            except Exception:
                log.exception("background response %s failed", job.key)
                await self.jobs.finish(job, worker)
            finally:
                self.running.pop(job.key, None)
                self.shared.unwatch(BACKGROUND, job.key)
                await lease.end()

    async def _background(self, response_id: str, queued: dict[str, Any] | None, lease: Lease) -> None:
        record = await self.records.get(response_id)
        if record is None and queued is not None:
            record = StoredResponse.model_validate(queued)  # its server died before writing it
        if record is None or record.request is None or record.response.get("status") in FINISHED:
            return
        with auth.acting_as(self.auth, record.owner):  # what it reads and writes is its owner's doing
            await self._run_background(record, record.request, lease)

    async def _run_background(self, record: StoredResponse, request_fields: dict[str, Any], lease: Lease) -> None:
        request = CreateResponse.model_validate(request_fields)
        # Run from the start (again, after a crash): the response's output is rebuilt, never half kept.
        response = {**record.response, "status": "in_progress", "output": [], "usage": None}
        await lease.check()
        await self.records.put(record.model_copy(update={"response": response}))
        try:
            # Again: its previous response or conversation may be gone since it was queued.
            turn, _ = await self.prepare(request, response["id"])
            turn.response = response
            events = await self.provider().respond(turn)
        except LaminaError as exc:
            await lease.check()
            await self.records.put(record.model_copy(update={"response": failed_response(response, exc)}))
            return
        run = self._run(turn, record.input_items, events, announce=False, lease=lease)
        async with aclosing(run):
            async for _ in run:
                pass


def replay(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The events (without sequence numbers) that stream a finished response's output, then its end: what a client
    following a background response receives once it is done."""
    events: list[dict[str, Any]] = []
    for index, item in enumerate(_outputs(response)):
        kind, item_id = item.get("type"), item.get("id", "")
        where = {"item_id": item_id, "output_index": index}
        if kind == "message":
            events.append(
                {"type": "response.output_item.added", "output_index": index, "item": {**item, "content": []}}
            )
            for content_index, part in enumerate(item.get("content") or []):
                at = {**where, "content_index": content_index}
                text = part.get("text", "")
                empty = {**part, "text": "", "annotations": []}
                events.append({"type": "response.content_part.added", **at, "part": empty})
                events.append({"type": "response.output_text.delta", **at, "delta": text, "logprobs": []})
                for n, annotation in enumerate(part.get("annotations") or []):
                    events.append(
                        {
                            "type": "response.output_text.annotation.added",
                            **at,
                            "annotation": annotation,
                            "annotation_index": n,
                        }
                    )
                events.append({"type": "response.output_text.done", **at, "text": text, "logprobs": []})
                events.append({"type": "response.content_part.done", **at, "part": part})
        elif kind == "function_call":
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "arguments": "", "status": "in_progress"},
                }
            )
            arguments = item.get("arguments", "")
            events.append({"type": "response.function_call_arguments.delta", **where, "delta": arguments})
            events.append({"type": "response.function_call_arguments.done", **where, "arguments": arguments})
        else:
            events.append({"type": "response.output_item.added", "output_index": index, "item": item})
            if kind in ("file_search_call", "web_search_call"):
                steps = ["in_progress", "searching"] + (["completed"] if item.get("status") == "completed" else [])
                for step in steps:
                    events.append({"type": f"response.{kind}.{step}", **where})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    status = response.get("status")
    if status == "failed":
        error = response.get("error") or {}
        events.append({"type": "error", "code": error.get("code"), "message": error.get("message", ""), "param": None})
    terminal = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}
    events.append({"type": terminal.get(status or "", "response.failed"), "response": response})
    return events


ORPHANED = (
    "the server stopped while this response was being generated (it was killed or crashed); the response did not "
    "finish and its partial output was not kept"
)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _internal(exc: Exception) -> LaminaError:
    log.error("response failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return LaminaError("internal error while running the response", status=500, type="server_error")


def normalize_item_text(text: str) -> Item:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


def _check_call_outputs(context: list[Item], items: list[Item]) -> None:
    """A function call's output must answer a call the model made: an upstream would refuse it less clearly."""
    calls = {item.get("call_id") for item in context if item.get("type") == "function_call"}
    for index, item in enumerate(items):
        if item.get("type") == "function_call":
            calls.add(item.get("call_id"))
        elif item.get("type") == "function_call_output" and item.get("call_id") not in calls:
            raise bad_request(
                f"input.{index}.call_id: no function call '{item.get('call_id')}' to answer in this response's "
                "context (give `previous_response_id`, `conversation`, or the function_call item too)",
                param=f"input.{index}.call_id",
            )


def _outputs(response: dict[str, Any]) -> list[Item]:
    return [item for item in response.get("output") or [] if isinstance(item, dict)]
