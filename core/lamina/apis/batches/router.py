"""The batches router: OpenAI's batch objects, each batch run as one durable, leased job.

Creating a batch writes its record (`validating`) and queues a job (`batches.run`, key = the batch id). Each
process runs `concurrent_batches` workers; a worker claims a job with a lease, renewed while it works. A run
reads the input file, validates every line (a bad line fails the whole batch, `errors` naming the line), then
sends the lines that have no result yet through the stack's own routes (`lamina.internal.call`), at most
`max_in_flight_per_batch` at once per batch and `max_in_flight` across the process's batches, so interactive
traffic keeps its share. Each line's result is stored under `batch_results/<batch>/<line>` as soon as it is known:
a crashed worker's lease expires, another process resumes the batch, and only the lines without a result run again
(a line that was in flight when the process died runs twice; its result is stored once). When every line has a
result the worker writes the output and error files and completes the batch. Lines run as the batch's owner and
count against its quotas, as its HTTP requests would (`_call`). Past `expires_at` no line starts, and the batch ends
`expired`, its unrun lines in the error file as `batch_expired`.

Who writes what, so no update is lost without transactions: the record (`batches/<id>`) is written by `create`
and then only by the worker that holds the batch's lease; progress counts go to `batch_progress/<id>` (the
worker), a cancellation to `batch_cancel/<id>` (the cancel route). The view merges the three. A worker polls the
cancellation every `CHECK_SECONDS` and launches no line after it sees one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.types import ASGIApp

from lamina import auth
from lamina.access import Principal
from lamina.apis.batches.types import (
    ENDPOINTS,
    FINAL,
    Batch,
    BatchError,
    BatchErrors,
    BatchesConfig,
    BatchList,
    BatchRecord,
    CreateBatch,
    LineResult,
    ListQuery,
    RequestCounts,
    Status,
)
from lamina.apis.files.router import FilesRouter
from lamina.errors import LaminaError, bad_request, not_found
from lamina.internal import call, serves
from lamina.quotas import RequestUsage, current_usage
from lamina.specs import RouterDeps
from lamina.storage import Job, KVStore, Registry
from lamina.storage.lease import Lease, LeaseLost, Stopping, claim_next

log = logging.getLogger("lamina")
RUN = "batches.run"
CHECK_SECONDS = 0.5  # how soon a running batch notices a cancellation, and how often it stores its progress
MAX_ERRORS = 100  # a batch failed by validation lists at most this many bad lines
BLOCK = 1000  # lines per key prefix of results, so a batch's results are read a block at a time
FLUSH_LINES = 32  # results written to storage together
STOP_GRACE_SECONDS = 10.0


class Cancelled(BaseModel):
    at: int


class Progress(BaseModel):
    completed: int = 0
    failed: int = 0


class Line(BaseModel):
    custom_id: str
    body: bytes


class Ended(Exception):
    """The batch must stop launching lines: it was cancelled or it expired."""

    def __init__(self, status: Status) -> None:
        self.status = status


class Results:
    """A batch's results on their way to storage: written in groups (one write per `FLUSH_LINES` results, and at
    every checkpoint), each group under the block of lines it holds, so a store write is not paid per line and a
    block of results can be read at a time. Results not yet written when a process dies are lost: their lines run
    again. The progress counts are of stored results only."""

    def __init__(self, kv: KVStore, batch_id: str, lease: Lease) -> None:
        self.kv, self.batch_id, self.lease = kv, batch_id, lease
        self.pending: list[LineResult] = []
        self.progress = Progress()
        self.writer = secrets.token_hex(4)  # group keys of two processes that both ran the batch never collide
        self.written = 0

    async def add(self, result: LineResult) -> None:
        self.pending.append(result)
        if len(self.pending) >= FLUSH_LINES:
            await self.flush()

    async def flush(self) -> None:
        pending, self.pending = self.pending, []
        if not pending or self.lease.lost:
            return
        blocks: dict[int, list[dict[str, Any]]] = {}
        for result in pending:
            blocks.setdefault(result.line // BLOCK, []).append(result.model_dump())
        for block, group in blocks.items():
            self.written += 1
            key = f"batch_results/{self.batch_id}/{block:04d}/{self.writer}-{self.written:08d}"
            await self.kv.set(key, {"results": group})
        ok = sum(1 for result in pending if result.status_code < 400)
        self.progress.completed += ok
        self.progress.failed += len(pending) - ok
        await self.kv.set(f"batch_progress/{self.batch_id}", self.progress.model_dump())


def _now() -> int:
    return int(time.time())


class BatchesRouter:
    def __init__(self, config: BatchesConfig, deps: RouterDeps) -> None:
        self.config = config
        self.files = deps.api(FilesRouter)
        self.app: Callable[[], ASGIApp] = deps.app
        self.auth = deps.auth
        self.jobs = deps.storage.jobs
        self.shared = deps.shared  # a cancellation in any process reaches the batch's worker at once
        kv: KVStore = deps.storage.kv
        self.kv = kv
        self.batches = Registry(kv, "batches/", BatchRecord, key=lambda r: r.batch.id)
        self.slots = asyncio.Semaphore(config.max_in_flight)
        self.wakeup = asyncio.Event()
        self.stopping = False
        self.workers: list[asyncio.Task[None]] = []
        self.worker_prefix = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def start(self) -> None:
        self.workers = [
            asyncio.create_task(self._work(f"{self.worker_prefix}:{i}"), name=f"batches worker {i}")
            for i in range(self.config.concurrent_batches)
        ]

    async def close(self) -> None:
        self.stopping = True
        self.wakeup.set()
        _, stuck = await asyncio.wait(self.workers, timeout=STOP_GRACE_SECONDS) if self.workers else (set(), set())
        for task in stuck:
            task.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)

    # -- the API

    async def lookup(self, batch_id: str) -> BatchRecord:
        """The one place a batch is found by id: one the caller may not read does not exist for it."""
        record = await self.batches.get(batch_id)
        if record is None or not auth.can("read", "batch", batch_id, record.owner):
            raise not_found(f"batch '{batch_id}' not found", param="batch_id")
        return record

    async def view(self, record: BatchRecord) -> Batch:
        batch = record.batch
        if batch.status in FINAL:
            return batch
        update: dict[str, Any] = {}
        progress = await self.kv.get(f"batch_progress/{batch.id}")
        if progress is not None:
            counts = Progress.model_validate(progress)
            update["request_counts"] = RequestCounts(
                total=batch.request_counts.total, completed=counts.completed, failed=counts.failed
            )
        cancelled = await self.kv.get(f"batch_cancel/{batch.id}")
        if cancelled is not None:
            update.update(status="cancelling", cancelling_at=Cancelled.model_validate(cancelled).at)
        return batch.model_copy(update=update)

    async def get(self, batch_id: str) -> Batch:
        return await self.view(await self.lookup(batch_id))

    async def create(self, request: CreateBatch) -> Batch:
        if request.endpoint not in ENDPOINTS:
            raise bad_request(
                f"endpoint '{request.endpoint}' cannot be batched; use one of {', '.join(ENDPOINTS)}",
                param="endpoint",
            )
        if not serves(self.app(), "POST", request.endpoint):
            raise bad_request(f"endpoint '{request.endpoint}' is not served by this server", param="endpoint")
        file = (await self.files.lookup(request.input_file_id, param="input_file_id")).file
        if file.purpose != "batch":
            raise bad_request(
                f"file '{file.id}' has purpose '{file.purpose}'; upload batch input with purpose 'batch'",
                param="input_file_id",
            )
        now = time.time_ns()
        created_at = now // 1_000_000_000
        batch_id, owner = "batch_" + secrets.token_hex(12), auth.owner()
        auth.require("create", "batch", batch_id, owner)
        batch = Batch(
            id=batch_id,
            endpoint=request.endpoint,
            input_file_id=file.id,
            completion_window=request.completion_window,
            status="validating",
            created_at=created_at,
            expires_at=created_at + self.config.completion_window_seconds,
            metadata=request.metadata,
        )
        caller = auth.caller()
        record = BatchRecord(batch=batch, order=f"{now:020d}", owner=owner)
        if caller is not None:  # its lines count against the key it was made with, too
            record = record.model_copy(update={"key_id": caller.key_id, "key_limits": dict(caller.limits)})
        await self.batches.put(record)
        await self.jobs.ensure(RUN, batch.id, {})
        self.wakeup.set()
        return batch

    async def list_batches(self, query: ListQuery) -> BatchList:
        visible = [r for r in await self.batches.list() if auth.can("read", "batch", r.batch.id, r.owner)]
        records = sorted(visible, key=lambda r: r.order, reverse=True)
        if query.after is not None:
            after = await self.lookup(query.after)
            records = [r for r in records if r.order < after.order]
        page = records[: query.limit]
        data = [await self.view(r) for r in page]
        return BatchList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=len(records) > len(page),
        )

    async def cancel(self, batch_id: str) -> Batch:
        record = await self.lookup(batch_id)
        auth.require("update", "batch", batch_id, record.owner)
        if record.batch.status in FINAL:
            raise LaminaError(
                f"batch '{batch_id}' is {record.batch.status} and cannot be cancelled",
                status=409,
                param="batch_id",
                code="batch_not_cancellable",
            )
        if await self.kv.get(f"batch_cancel/{batch_id}") is None:
            await self.kv.set(f"batch_cancel/{batch_id}", Cancelled(at=_now()).model_dump())
        await self.shared.cancel(RUN, batch_id)
        self.wakeup.set()  # a batch no worker holds yet is finalised by the next worker to claim it
        return await self.view(record)

    # -- running batches

    async def _work(self, worker: str) -> None:
        while not self.stopping:
            lease = await claim_next(
                self.jobs, RUN, worker, self.config.lease_seconds, self.wakeup, lambda: self.stopping
            )
            if lease is None:
                continue
            job = lease.job
            try:
                await self._run(job, lease)
            except LeaseLost:
                log.info("batch %s stopped here: another process took it over", job.key)
            except Stopping:
                await self.jobs.release(job, worker)
                return
            except asyncio.CancelledError:
                await self.jobs.release(job, worker)
                raise
            except Exception:
                log.exception("batch %s failed", job.key)
            finally:
                await lease.end()

    async def _save(self, lease: Lease, batch: Batch) -> None:
        await lease.check()
        record = await self.lookup(batch.id)
        await self.batches.put(record.model_copy(update={"batch": batch}))

    async def _run(self, job: Job, lease: Lease) -> None:
        record = await self.batches.get(job.key)
        if record is None or record.batch.status in FINAL:
            await self.jobs.finish(job, lease.worker)
            return
        # The lines, the input file's reading and the output files are the batch owner's doing.
        self.shared.watch(RUN, job.key)
        try:
            with auth.acting_as(self.auth, record.owner):
                await self._run_as_owner(job, lease, record)
        finally:
            self.shared.unwatch(RUN, job.key)

    async def _run_as_owner(self, job: Job, lease: Lease, record: BatchRecord) -> None:
        batch = record.batch
        try:
            lines = await self._read_lines(batch)
        except _Invalid as invalid:
            await self._save(
                lease,
                batch.model_copy(update={"status": "failed", "failed_at": _now(), "errors": invalid.errors}),
            )
            await self.jobs.finish(job, lease.worker)
            return
        if batch.status == "validating":
            batch = batch.model_copy(
                update={
                    "status": "in_progress",
                    "in_progress_at": _now(),
                    "request_counts": RequestCounts(total=len(lines)),
                }
            )
            await self._save(lease, batch)
        end: Status = "completed"
        try:
            await self._run_lines(batch, lines, lease, self._quota_subject(record))
        except Ended as ended:
            end = ended.status
        await self._finalize(batch, lines, lease, end)
        await self.jobs.finish(job, lease.worker)

    async def _read_lines(self, batch: Batch) -> list[Line]:
        try:
            _, chunks = await self.files.content(batch.input_file_id)
        except LaminaError as exc:
            raise _Invalid([BatchError(code="invalid_file", message=exc.message, param="input_file_id")]) from None
        lines: list[Line] = []
        errors: list[BatchError] = []
        seen: set[str] = set()
        number = 0
        # Parsed a chunk at a time in a thread: a 10,000-line file is ~0.1 s of CPU the event loop does not wait on.
        async for texts in _line_groups(chunks):
            checked = await asyncio.to_thread(_check_lines, texts, number, batch.endpoint, seen)
            number += len(texts)
            for item in checked:
                if isinstance(item, Line):
                    lines.append(item)
                elif len(errors) < MAX_ERRORS:
                    errors.append(item)
        if not lines and not errors:
            errors.append(BatchError(code="empty_file", message="the input file has no requests"))
        if len(lines) > self.config.max_lines:
            errors.append(
                BatchError(
                    code="too_many_requests",
                    message=f"the input file has {len(lines)} requests; this server takes at most "
                    f"{self.config.max_lines} per batch",
                )
            )
        if errors:
            raise _Invalid(errors)
        return lines

    async def _done(self, batch_id: str, count: int) -> dict[int, int]:
        """Line index -> status code of every line that already has a stored result."""
        done: dict[int, int] = {}
        for block in range((count + BLOCK - 1) // BLOCK):
            for group in await self.kv.values(f"batch_results/{batch_id}/{block:04d}/"):
                for result in group["results"]:
                    done[result["line"]] = result["status_code"]
        return done

    def _quota_subject(self, record: BatchRecord) -> Principal | None:
        """Who a batch's lines count against (its owner, and the key it was made with), when quotas apply."""
        if self.auth is None or record.owner is None:
            return None
        return Principal(
            principal=record.owner.principal,
            attributes=record.owner.attributes,
            key_id=record.key_id,
            limits=record.key_limits,
        )

    async def _call(self, app: ASGIApp, path: str, body: bytes, caller: Principal | None) -> tuple[int, bytes]:
        """One line through the stack's routes, counted against the caller's quotas as its HTTP request would be:
        a line over a limit is answered with the 429 the caller would have had, and the batch goes on."""
        if caller is None or self.auth is None:
            return await call(app, "POST", path, body)
        quotas = self.auth.quotas
        subjects = quotas.subjects(caller)
        try:
            await quotas.admit(subjects)
        except LaminaError as refused:
            return refused.status, orjson.dumps(refused.body())
        usage = RequestUsage()
        counting = current_usage.set(usage)
        try:
            return await call(app, "POST", path, body)
        finally:
            current_usage.reset(counting)
            quotas.account(caller, usage)
            if usage.tokens:
                try:
                    await quotas.spend(subjects, usage.tokens)
                except Exception:
                    log.exception("batch line: counting the tokens of %s failed", caller.principal)

    async def _run_lines(self, batch: Batch, lines: list[Line], lease: Lease, caller: Principal | None) -> None:
        done = await self._done(batch.id, len(lines))
        results = Results(self.kv, batch.id, lease)
        results.progress.completed = sum(1 for code in done.values() if code < 400)
        results.progress.failed = len(done) - results.progress.completed
        per_batch = asyncio.Semaphore(self.config.max_in_flight_per_batch)
        app = self.app()
        path = batch.endpoint
        in_flight: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []

        async def run(index: int, line: Line) -> None:
            try:
                async with self.slots:
                    status, body = await self._call(app, path, line.body, caller)
                await results.add(
                    LineResult(
                        line=index,
                        id="batch_req_" + secrets.token_hex(12),
                        custom_id=line.custom_id,
                        status_code=status,
                        body=body.decode() or "null",
                    )
                )
            except Exception as exc:
                failures.append(exc)
            finally:
                per_batch.release()

        last_check = 0.0
        try:
            for index, line in enumerate(lines):
                if index in done:
                    continue
                await per_batch.acquire()
                if failures:
                    raise failures[0]
                if self.shared.cancelled(RUN, batch.id):  # told by any process, without waiting for a checkpoint
                    raise Ended("cancelled")
                if time.monotonic() - last_check > CHECK_SECONDS:
                    last_check = time.monotonic()
                    await self._checkpoint(batch, results, lease)
                task = asyncio.create_task(run(index, line))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            # Lines already sent finish (their upstream work is paid for); none starts after this.
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            with contextlib.suppress(LeaseLost, Stopping):
                await results.flush()
        if failures:
            raise failures[0]

    async def _checkpoint(self, batch: Batch, results: Results, lease: Lease) -> None:
        await lease.check()
        await results.flush()
        if await self.kv.get(f"batch_cancel/{batch.id}") is not None:
            raise Ended("cancelled")
        if batch.expires_at is not None and _now() >= batch.expires_at:
            raise Ended("expired")

    async def _finalize(self, batch: Batch, lines: list[Line], lease: Lease, end: Status) -> None:
        if end == "completed" and await self.kv.get(f"batch_cancel/{batch.id}") is not None:
            end = "cancelled"  # cancelled while its last lines ran: OpenAI reports such a batch cancelled
        if end == "completed":
            batch = batch.model_copy(update={"status": "finalizing", "finalizing_at": _now()})
            await self._save(lease, batch)
        unfinished = lines if end == "expired" else None
        output, errors, counts = await self._write_results(batch, lease, unfinished)
        update: dict[str, Any] = {
            "status": end,
            f"{end}_at": _now(),
            "output_file_id": output,
            "error_file_id": errors,
            "request_counts": RequestCounts(total=len(lines), **counts.model_dump()),
        }
        if end == "cancelled":
            cancelled = await self.kv.get(f"batch_cancel/{batch.id}")
            update["cancelling_at"] = Cancelled.model_validate(cancelled).at if cancelled else _now()
        await self._save(lease, batch.model_copy(update=update))
        for key in (f"batch_progress/{batch.id}", f"batch_cancel/{batch.id}"):
            await self.kv.delete(key)
        log.info("batch %s %s: %s", batch.id, end, counts)

    async def _write_results(
        self, batch: Batch, lease: Lease, unfinished: list[Line] | None = None
    ) -> tuple[str | None, str | None, Progress]:
        """Write the output file (2xx answers) and the error file (the rest), a block of results at a time; return
        their ids (None for a file that would be empty) and the counts. With `unfinished` (the lines of an expired
        batch), each line without a result gets a `batch_expired` error line, as OpenAI writes them."""
        counts = Progress()
        outputs = await self.files.provider.begin_upload()
        errors = await self.files.provider.begin_upload()
        try:
            seen: set[int] = set()
            block = 0
            while True:
                values = await self.kv.values(f"batch_results/{batch.id}/{block:04d}/")
                if not values and block * BLOCK >= batch.request_counts.total:
                    break
                ok_lines, error_lines, completed, failed = await asyncio.to_thread(_format_results, values, seen)
                if unfinished is not None:
                    block_lines = range(block * BLOCK, min((block + 1) * BLOCK, len(unfinished)))
                    expired = [_expired_line(unfinished[i]) for i in block_lines if i not in seen]
                    error_lines += b"".join(expired)
                    failed += len(expired)
                outputs.write(ok_lines)
                errors.write(error_lines)
                counts.completed += completed
                counts.failed += failed
                block += 1
            await lease.check()
            output_id = await self._store_file(outputs, f"{batch.id}_output.jsonl", counts.completed)
            error_id = await self._store_file(errors, f"{batch.id}_error.jsonl", counts.failed)
        except BaseException:
            outputs.abort()
            errors.abort()
            raise
        return output_id, error_id, counts

    async def _store_file(self, upload: Any, filename: str, lines: int) -> str | None:
        if not lines:
            upload.abort()
            return None
        file = await self.files.upload(upload, filename=filename, purpose="batch_output", expires_after=None)
        return file.id


class _Invalid(Exception):
    def __init__(self, errors: list[BatchError]) -> None:
        self.errors = BatchErrors(data=errors)


def _expired_line(line: Line) -> bytes:
    error = {"code": "batch_expired", "message": "this request was not run before the batch's completion window ended"}
    answer = {"id": "batch_req_" + secrets.token_hex(12), "custom_id": line.custom_id, "response": None, "error": error}
    return orjson.dumps(answer) + b"\n"


def _line_error(result: LineResult) -> dict[str, Any]:
    body: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        body = orjson.loads(result.body)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return {"code": str(error.get("code") or error.get("type") or "error"), "message": str(error.get("message"))}
    return {"code": "error", "message": f"the request failed with status {result.status_code}"}


def _check_line(text: str, endpoint: str, seen: set[str]) -> Line | BatchError:
    """A parsed line, or what is wrong with it (without its number; the caller adds it)."""
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return BatchError(code="invalid_json", message=f"not valid JSON: {exc}")
    if not isinstance(request, dict):
        return BatchError(code="invalid_request", message="each line must be a JSON object")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return BatchError(code="invalid_request", message="custom_id must be a non-empty string", param="custom_id")
    if custom_id in seen:
        return BatchError(
            code="duplicate_custom_id", message=f"custom_id '{custom_id}' is used twice", param="custom_id"
        )
    if request.get("method") != "POST":
        return BatchError(code="invalid_request", message="method must be POST", param="method")
    url = request.get("url")
    if url != endpoint:
        return BatchError(
            code="mismatched_url", message=f"url must be the batch's endpoint '{endpoint}', not {url!r}", param="url"
        )
    body = request.get("body")
    if not isinstance(body, dict):
        return BatchError(code="invalid_request", message="body must be a JSON object", param="body")
    if body.get("stream"):
        return BatchError(code="invalid_request", message="streaming is not supported in a batch", param="body.stream")
    seen.add(custom_id)
    return Line(custom_id=custom_id, body=orjson.dumps(body))


async def _line_groups(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[str]]:
    """The lines of a file, a chunk's worth at a time."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        if complete:
            yield [line.decode("utf-8", "replace") for line in complete]
    if pending:
        yield [pending.decode("utf-8", "replace")]


def _check_lines(texts: list[str], before: int, endpoint: str, seen: set[str]) -> list[Line | BatchError]:
    """Each non-blank line parsed, or what is wrong with it, naming its number (1-based, as an editor shows it)."""
    checked: list[Line | BatchError] = []
    for number, text in enumerate(texts, start=before + 1):
        if text.strip():
            item = _check_line(text, endpoint, seen)
            checked.append(item.model_copy(update={"line": number}) if isinstance(item, BatchError) else item)
    return checked


def _format_results(groups: list[dict[str, Any]], seen: set[int]) -> tuple[bytes, bytes, int, int]:
    """Output-file lines (2xx answers) and error-file lines (the rest) of stored result groups, and their counts.
    A line stored twice (run again after its worker lost the batch) is written once."""
    ok_lines: list[bytes] = []
    error_lines: list[bytes] = []
    for value in (result for group in groups for result in group["results"]):
        if value["line"] in seen:
            continue
        seen.add(value["line"])
        result = LineResult.model_validate(value)
        ok = result.status_code < 400
        line = {
            "id": result.id,
            "custom_id": result.custom_id,
            "response": {
                "status_code": result.status_code,
                "request_id": result.id,
                "body": orjson.Fragment(result.body),
            },
            "error": None if ok else _line_error(result),
        }
        (ok_lines if ok else error_lines).append(orjson.dumps(line))
    ok_file = b"".join(line + b"\n" for line in ok_lines)
    error_file = b"".join(line + b"\n" for line in error_lines)
    return ok_file, error_file, len(ok_lines), len(error_lines)
