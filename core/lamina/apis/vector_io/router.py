"""The vector stores router: OpenAI's store, file and batch objects, ingestion as durable jobs, search.

Every object lives in the stack's storage (`lamina.storage.Registry`, read through on each request), so several
processes sharing the storage serve the same stores. See `lamina.apis.vector_io` for the search modes and
`lamina.apis.vector_io.provider` for what providers do.

Ingestion: attaching a file writes its record (`in_progress`) and queues a job (`vector_io.ingest`, key
`<store>/<file>`) on `deps.storage.jobs`. Each process runs `ingestion_concurrency` workers that claim jobs with a
lease (`ingestion_lease_seconds`), renew it every third of that while they work and check it before every write
to the provider or the record; a worker whose lease is lost (the job was cancelled by a detach or a batch cancel,
superseded by a re-attach, or taken over after the lease expired) drops its work without writing. A crashed
worker's lease expires and any process's worker resumes the job from scratch (the file's chunks are replaced).
Local enqueues wake local workers at once; otherwise workers poll every `lease.POLL_SECONDS`. Closing the router gives
running jobs back (they resume at once in another process or at the next start).

Activity: searches do not write. `last_active_at` (and `expires_at`, which follows it) is tracked in memory per
process, shown at once by this process, and written to the store record by a background loop when it is at
least `ACTIVITY_RESOLUTION` seconds ahead of the stored value, and at shutdown. Expiry is counted in days, so
an hour's resolution is invisible to it; a crash loses at most that hour of activity.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from lamina import auth, observe
from lamina.access import Action
from lamina.apis.files.router import FilesRouter
from lamina.apis.inference.router import InferenceRouter
from lamina.apis.inference.types import ChatCompletionRequest, EmbeddingRequest
from lamina.apis.rerank.router import RerankRouter
from lamina.apis.vector_io.provider import Chunk, Hit, Mode, VectorIOProvider
from lamina.apis.vector_io.records import BatchRecord, FileRecord, StoreRecord
from lamina.apis.vector_io.search import fuse, hybrid_depth, matches, new_id, no_match, paginate
from lamina.apis.vector_io.types import (
    AttachFile,
    Attributes,
    ChunkingStrategy,
    Comparison,
    Compound,
    CreateBatch,
    CreateStore,
    InsertRequest,
    PageQuery,
    QueryRequest,
    SearchRequest,
    UpdateStore,
    VectorIOConfig,
)
from lamina.errors import LaminaError, bad_request, not_found
from lamina.specs import RouterDeps
from lamina.storage import Job, Registry
from lamina.storage.lease import Lease, LeaseLost, Stopping, claim_next

log = logging.getLogger("lamina")
POLL_AFTER_MS = "100"  # tells the openai client's *_and_poll helpers how soon to ask again
INGEST = "vector_io.ingest"
MAX_ATTEMPTS = 5  # a file whose ingestion keeps killing its worker fails instead of looping forever
ACTIVITY_RESOLUTION = 3600  # seconds: how far last_active_at may lag in storage
ACTIVITY_FLUSH_SECONDS = 60.0
OPENAI_RANKERS = frozenset({"auto", "default-2024-11-15", "none"})  # any other ranker is a reranker model
STOP_GRACE_SECONDS = 10.0  # how long close() waits for workers to reach a checkpoint before cancelling them
Filter = Comparison | Compound


def _counts(records: list[FileRecord]) -> dict[str, int]:
    counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
    for record in records:
        counts[record.status] += 1
    return {**counts, "total": len(records)}


class VectorStoresRouter:
    def __init__(self, config: VectorIOConfig, providers: dict[str, VectorIOProvider], deps: RouterDeps) -> None:
        self.providers = providers
        self.settings = config
        self.inference = deps.api(InferenceRouter)
        self.files_api = deps.api(FilesRouter)
        self.reranker = deps.api(RerankRouter)
        # Imported here: the file processors' module uses vector_io's chunking types, so importing it at the top
        # would be circular.
        from lamina.apis.file_processors.router import FileProcessorsRouter

        self.file_processors = deps.api(FileProcessorsRouter)
        self.jobs = deps.storage.jobs
        kv = deps.storage.kv
        self.stores = Registry(kv, "vector_stores/", StoreRecord, key=lambda s: s.id)
        self.files = Registry(kv, "vector_store_files/", FileRecord, key=lambda f: f"{f.vector_store_id}/{f.id}")
        self.batches = Registry(
            kv, "vector_store_file_batches/", BatchRecord, key=lambda b: f"{b.vector_store_id}/{b.id}"
        )
        # This process's writes of one file's chunks and record (workers, attach, detach, cancel) go one at a
        # time, so a detach here never interleaves with a worker here; other processes are fenced by the lease.
        # Different files write at once: ingestion waits on the database's round trips, not on the CPU.
        self.file_locks: dict[str, asyncio.Lock] = {}
        self.file_lock_users: collections.Counter[str] = collections.Counter()
        self.wakeup = asyncio.Event()
        self.stopping = False
        self.workers: list[asyncio.Task[None]] = []
        self.activity: dict[str, int] = {}  # store id -> last activity seen by this process (not yet stored)
        self.flusher: asyncio.Task[None] | None = None
        self.worker_prefix = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def start(self) -> None:
        self.files_api.on_delete.append(self.forget_file)
        # Files deleted while a crash kept their stores from hearing of it still leave them.
        for record in await self.files.list():
            if await self.files_api.registry.get(record.id) is None:
                await self.forget_file(record.id)
        for store in await self.stores.list():
            if not store.chunk_attributes:
                await self._hand_over_attributes(store)
        # Files left in_progress by a crash of the previous version (which kept no jobs), or between a record's
        # write and its job's: queue what is missing, leaving jobs that exist (maybe running elsewhere) alone.
        for record in await self.files.list():
            if record.status == "in_progress":
                payload = {"store_id": record.vector_store_id, "file_id": record.id}
                if await self.jobs.ensure(INGEST, f"{record.vector_store_id}/{record.id}", payload):
                    log.info("queued the interrupted ingestion of %s into %s", record.id, record.vector_store_id)
        self.workers = [
            asyncio.create_task(self._work(f"{self.worker_prefix}:{i}"), name=f"vector_io worker {i}")
            for i in range(self.settings.ingestion_concurrency)
        ]
        self.flusher = asyncio.create_task(self._flush_activity_periodically(), name="vector_io activity")

    async def _hand_over_attributes(self, store: StoreRecord) -> None:
        provider = self.providers.get(store.provider_id)
        if provider is None:
            return
        for record in await self.files.list(f"{store.id}/"):
            if record.attributes and record.status == "completed":
                await provider.update_attributes(store.id, record.id, record.attributes)
        await self.stores.put(store.model_copy(update={"chunk_attributes": True}))

    async def close(self) -> None:
        self.stopping = True
        self.wakeup.set()
        # Workers stop at their next checkpoint and give their job back; one stuck in a long call is cancelled
        # (its job's lease then expires and the job resumes elsewhere).
        _, stuck = await asyncio.wait(self.workers, timeout=STOP_GRACE_SECONDS) if self.workers else (set(), set())
        for task in stuck:
            task.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        if self.flusher is not None:
            self.flusher.cancel()
            await asyncio.gather(self.flusher, return_exceptions=True)
        await self._flush_activity(everything=True)

    @contextlib.asynccontextmanager
    async def _writing(self, store_id: str, file_id: str) -> AsyncIterator[None]:
        """Hold the lock of one file of a store (made on first use, dropped when nobody holds or awaits it)."""
        key = f"{store_id}/{file_id}"
        lock = self.file_locks.setdefault(key, asyncio.Lock())
        self.file_lock_users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self.file_lock_users[key] -= 1
            if not self.file_lock_users[key]:
                del self.file_lock_users[key], self.file_locks[key]

    # -- records

    async def _store(self, store_id: str, action: Action = "read") -> StoreRecord:
        """The one place a store is found by id: every route (and its files and batches) goes through here, so
        the caller's access is checked here. A store the caller may not read does not exist for it."""
        store = await self.stores.get(store_id)
        if store is None or not auth.can("read", "vector_store", store_id, store.owner):
            raise not_found(f"vector store '{store_id}' not found", param="vector_store_id")
        if action != "read":
            auth.require(action, "vector_store", store_id, store.owner)
        return store

    async def _file(self, store_id: str, file_id: str) -> FileRecord:
        await self._store(store_id)
        record = await self.files.get(f"{store_id}/{file_id}")
        if record is None:
            raise not_found(f"file '{file_id}' is not in vector store '{store_id}'", param="file_id")
        return record

    def _provider(self, store: StoreRecord) -> VectorIOProvider:
        provider = self.providers.get(store.provider_id)
        if provider is None:
            raise LaminaError(
                f"vector store '{store.id}' is kept by vector_io provider '{store.provider_id}', which is not "
                "configured",
                status=503,
                type="server_error",
            )
        return provider

    def _last_active(self, store: StoreRecord) -> int:
        return max(store.last_active_at, self.activity.get(store.id, 0))

    def _touch(self, store_id: str) -> None:
        self.activity[store_id] = int(time.time())

    def _store_view(self, store: StoreRecord, files: list[FileRecord]) -> dict[str, Any]:
        counts = _counts(files)
        last_active = self._last_active(store)
        expires_at = store.expires_at(last_active)
        status = "in_progress" if counts["in_progress"] else "completed"
        if expires_at is not None and expires_at <= time.time():
            status = "expired"
        return {
            "id": store.id,
            "object": store.object,
            "created_at": store.created_at,
            "name": store.name,
            "description": store.description,
            "usage_bytes": sum(f.usage_bytes for f in files),
            "file_counts": counts,
            "status": status,
            "expires_after": store.expires_after.model_dump() if store.expires_after else None,
            "expires_at": expires_at,
            "last_active_at": last_active,
            "metadata": store.metadata,
            "embedding_model": store.embedding_model,
        }

    async def store_view(self, store_id: str) -> dict[str, Any]:
        store = await self._store(store_id)
        return self._store_view(store, await self.files.list(f"{store_id}/"))

    async def batch_view(self, store_id: str, batch_id: str) -> dict[str, Any]:
        batch = await self._batch(store_id, batch_id)
        files = {f.id: f for f in await self.files.list(f"{store_id}/")}
        members = [files[f] for f in batch.file_ids if f in files]
        counts = _counts(members)
        if batch.status == "cancelled" and not counts["in_progress"]:
            status = "cancelled"
        elif counts["in_progress"]:
            status = "cancelling" if batch.status == "cancelled" else "in_progress"
        else:
            status = "failed" if members and counts["failed"] == len(members) else "completed"
        return {
            "id": batch.id,
            "object": batch.object,
            "created_at": batch.created_at,
            "vector_store_id": batch.vector_store_id,
            "file_counts": counts,
            "status": status,
        }

    async def _batch(self, store_id: str, batch_id: str) -> BatchRecord:
        await self._store(store_id)
        batch = await self.batches.get(f"{store_id}/{batch_id}")
        if batch is None:
            raise not_found(f"file batch '{batch_id}' not found in vector store '{store_id}'", param="batch_id")
        return batch

    # -- stores

    async def _embedding_model(self, requested: str | None) -> str:
        if requested is None:
            requested = self.settings.default_embedding_model
        if requested is None:
            models = [m for m in await self.inference.list_models() if m.model_type == "embedding"]
            if not models:
                raise bad_request(
                    "no embedding model is available for the vector store; configure one (or pass `embedding_model`)",
                    param="embedding_model",
                )
            return models[0].id
        model = await self.inference.get_model(requested)
        if model.model_type != "embedding":
            raise bad_request(f"model '{requested}' is not an embedding model", param="embedding_model")
        return model.id

    async def create_store(self, request: CreateStore) -> dict[str, Any]:
        if not self.providers:
            raise LaminaError("no vector_io provider is configured", status=503, type="server_error")
        provider_id = request.provider_id or next(iter(self.providers))
        if provider_id not in self.providers:
            raise bad_request(f"no vector_io provider '{provider_id}'", param="provider_id")
        store_id = new_id("vs_")
        auth.require("create", "vector_store", store_id, auth.owner())
        for file_id in request.file_ids:
            await self.files_api.get_file(file_id)
        store = StoreRecord(
            id=store_id,
            created_at=int(time.time()),
            name=request.name or "",
            description=request.description,
            expires_after=request.expires_after,
            last_active_at=int(time.time()),
            metadata=request.metadata or {},
            embedding_model=await self._embedding_model(request.embedding_model),
            provider_id=provider_id,
            order=time.time_ns(),
            chunk_attributes=True,
            owner=auth.owner(),
        )
        await self.providers[provider_id].create_store(store.id)
        await self.stores.put(store)
        for file_id in request.file_ids:
            await self.attach(store.id, AttachFile(file_id=file_id, chunking_strategy=request.chunking_strategy))
        return await self.store_view(store.id)

    async def list_stores(self, query: PageQuery) -> dict[str, Any]:
        by_store: dict[str, list[FileRecord]] = {}
        for record in await self.files.list():
            by_store.setdefault(record.vector_store_id, []).append(record)
        visible = [
            store for store in await self.stores.list() if auth.can("read", "vector_store", store.id, store.owner)
        ]
        return paginate(visible, query, lambda store: self._store_view(store, by_store.get(store.id, [])))

    async def update_store(self, store_id: str, request: UpdateStore) -> dict[str, Any]:
        store = await self._store(store_id, "update")
        changes: dict[str, Any] = {"last_active_at": self._last_active(store)}
        if request.name is not None:
            changes["name"] = request.name
        if request.metadata is not None:
            changes["metadata"] = request.metadata
        if "expires_after" in request.model_fields_set:
            changes["expires_after"] = request.expires_after
        await self.stores.put(store.model_copy(update=changes))
        return await self.store_view(store_id)

    async def delete_store(self, store_id: str) -> None:
        store = await self._store(store_id, "delete")
        # The store's record goes first, in one atomic delete: of concurrent deletions (in any process) exactly
        # one removes it and cleans up; the others answer 404.
        if not await self.stores.delete(store_id):
            raise not_found(f"vector store '{store_id}' not found", param="vector_store_id")
        for record in await self.files.list(f"{store_id}/"):
            # Under the file's lock: a worker of this process that is writing the file finishes first; one that
            # writes after the cancel loses its lease at the check before the write. So once every file has been
            # passed, nothing of this process writes to the store any more and it can go.
            async with self._writing(store_id, record.id):
                await self.jobs.cancel(INGEST, f"{store_id}/{record.id}")
                await self.files.delete(f"{store_id}/{record.id}")
        for batch in await self.batches.list(f"{store_id}/"):
            await self.batches.delete(f"{store_id}/{batch.id}")
        self.activity.pop(store_id, None)
        await self._provider(store).delete_store(store_id)

    # -- files

    async def attach(self, store_id: str, request: AttachFile) -> dict[str, Any]:
        await self._store(store_id, "update")
        await self.files_api.get_file(request.file_id)  # 404 for an unknown file
        record = FileRecord(
            id=request.file_id,
            created_at=int(time.time()),
            vector_store_id=store_id,
            status="in_progress",
            chunking_strategy=(request.chunking_strategy or ChunkingStrategy()).resolved(),
            attributes=request.attributes or {},
            order=time.time_ns(),
        )
        async with self._writing(store_id, request.file_id):
            # The record first: a crash before the job is queued leaves an in_progress record, which start()
            # queues. Queuing replaces any job of this file, whose worker then drops its work.
            await self.files.put(record)
            await self.jobs.enqueue(
                INGEST, f"{store_id}/{request.file_id}", {"store_id": store_id, "file_id": record.id}
            )
        self.wakeup.set()
        self._touch(store_id)
        return record.view()

    async def get_file(self, store_id: str, file_id: str) -> dict[str, Any]:
        return (await self._file(store_id, file_id)).view()

    async def list_files(self, store_id: str, query: PageQuery, batch_id: str | None = None) -> dict[str, Any]:
        await self._store(store_id)
        records = await self.files.list(f"{store_id}/")
        if batch_id is not None:
            members = set((await self._batch(store_id, batch_id)).file_ids)
            records = [r for r in records if r.id in members]
        if query.filter:
            records = [r for r in records if r.status == query.filter]
        return paginate(records, query, FileRecord.view)

    async def update_file(self, store_id: str, file_id: str, attributes: Attributes | None) -> dict[str, Any]:
        store = await self._store(store_id, "update")
        async with self._writing(store_id, file_id):
            record = (await self._file(store_id, file_id)).model_copy(update={"attributes": attributes or {}})
            await self.files.put(record)
            # A worker ingesting the file reads the record's attributes before each insert, under the same lock.
            await self._provider(store).update_attributes(store_id, file_id, record.attributes)
        self._touch(store_id)
        return record.view()

    async def detach(self, store_id: str, file_id: str) -> None:
        store = await self._store(store_id, "update")
        async with self._writing(store_id, file_id):
            await self.jobs.cancel(INGEST, f"{store_id}/{file_id}")
            if not await self.files.delete(f"{store_id}/{file_id}"):  # atomic: one of concurrent detaches wins
                raise not_found(f"file '{file_id}' is not in vector store '{store_id}'", param="file_id")
            await self._provider(store).delete_file_chunks(store_id, file_id)
        self._touch(store_id)

    async def forget_file(self, file_id: str) -> None:
        """A file was deleted from the Files API: it leaves every store it was in, chunks and all."""
        for record in await self.files.list():
            if record.id != file_id:
                continue
            store = await self.stores.get(record.vector_store_id)
            async with self._writing(record.vector_store_id, file_id):
                await self.jobs.cancel(INGEST, f"{record.vector_store_id}/{file_id}")
                await self.files.delete(f"{record.vector_store_id}/{file_id}")
                if store is not None and store.provider_id in self.providers:
                    await self.providers[store.provider_id].delete_file_chunks(store.id, file_id)

    async def file_content(self, store_id: str, file_id: str) -> dict[str, Any]:
        store = await self._store(store_id)
        await self._file(store_id, file_id)
        chunks = await self._provider(store).file_chunks(store_id, file_id)
        return {
            "object": "vector_store.file_content.page",
            "data": [{"type": "text", "text": text} for text in chunks],
            "has_more": False,
            "next_page": None,
        }

    # -- batches

    async def create_batch(self, store_id: str, request: CreateBatch) -> dict[str, Any]:
        await self._store(store_id, "update")
        if request.file_ids and request.files:
            raise bad_request("give `file_ids` or `files`, not both", param="files")
        entries = request.files or [
            AttachFile(file_id=f, attributes=request.attributes, chunking_strategy=request.chunking_strategy)
            for f in request.file_ids
        ]
        if not entries:
            raise bad_request("a file batch needs at least one file", param="file_ids")
        for entry in entries:
            await self.files_api.get_file(entry.file_id)
        batch = BatchRecord(
            id=new_id("vsfb_"),
            created_at=int(time.time()),
            vector_store_id=store_id,
            file_ids=[e.file_id for e in entries],
            order=time.time_ns(),
        )
        await self.batches.put(batch)
        for entry in entries:
            await self.attach(store_id, entry)
        return await self.batch_view(store_id, batch.id)

    async def cancel_batch(self, store_id: str, batch_id: str) -> dict[str, Any]:
        store = await self._store(store_id, "update")
        batch = await self._batch(store_id, batch_id)
        await self.batches.put(batch.model_copy(update={"status": "cancelled"}))
        for file_id in batch.file_ids:
            async with self._writing(store_id, file_id):
                record = await self.files.get(f"{store_id}/{file_id}")
                if record is not None and record.status == "in_progress":
                    await self.jobs.cancel(INGEST, f"{store_id}/{file_id}")
                    await self.files.put(record.model_copy(update={"status": "cancelled"}))
                    await self._provider(store).delete_file_chunks(store_id, file_id)
        return await self.batch_view(store_id, batch_id)

    # -- ingestion

    async def _work(self, worker: str) -> None:
        while not self.stopping:
            seconds = self.settings.ingestion_lease_seconds
            lease = await claim_next(self.jobs, INGEST, worker, seconds, self.wakeup, lambda: self.stopping)
            if lease is None:
                continue
            job = lease.job
            if observe.current() is not None:
                observe.record("ingestion_queue_depth", await self.jobs.count(INGEST))
            began, status = time.perf_counter(), "error"
            try:
                with observe.span("ingestion_job", {"lamina.job.key": job.key, "lamina.job.attempt": job.attempts}):
                    await self._ingest(job, lease)
                status = "done"
            except LeaseLost:
                log.info("ingestion of %s stopped: its job was cancelled, replaced or taken over", job.key)
            except Stopping:
                await self.jobs.release(job, worker)
                return
            except asyncio.CancelledError:
                await self.jobs.release(job, worker)
                raise
            except Exception:
                log.exception("ingestion of %s failed", job.key)  # the record could not even be marked failed
            finally:
                observe.record("ingestion_job", time.perf_counter() - began, status=status)
                await lease.end()

    async def _ingest(self, job: Job, lease: Lease) -> None:
        from lamina.ingest import ExtractionError, chunk_text

        store_id, file_id = job.payload["store_id"], job.payload["file_id"]
        key = f"{store_id}/{file_id}"
        record = await self.files.get(key)
        store = await self.stores.get(store_id)
        if record is None or store is None or record.status != "in_progress":
            await self.jobs.finish(job, lease.worker)  # what the job was for is gone or done
            return
        attributes = record.attributes
        outcome: dict[str, Any]
        try:
            provider = self._provider(store)
            if job.attempts > MAX_ATTEMPTS:
                raise LaminaError(f"ingestion was interrupted {MAX_ATTEMPTS} times (the server stopped or crashed)")
            file = await self.files_api.get_file(file_id)
            path = await self.files_api.file_path(file_id)
            text, _ = await self.file_processors.extract(path, file.filename)
            static = record.chunking_strategy["static"]
            chunks = chunk_text(text, static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])
            async with self._writing(store_id, file_id):
                await lease.check()
                await provider.delete_file_chunks(store_id, file_id)  # what an interrupted run left
            size = self.settings.embedding_batch_size
            for start in range(0, len(chunks), size):
                batch = chunks[start : start + size]
                vectors = await self.embed(store.embedding_model, batch)
                async with self._writing(store_id, file_id):
                    await lease.check()
                    current = await self.files.get(key)
                    attributes = current.attributes if current is not None else attributes
                    await provider.insert(
                        store_id,
                        [
                            Chunk(text, file_id, {"file_id": file_id, "chunk_index": start + i}, attributes)
                            for i, text in enumerate(batch)
                        ],
                        vectors,
                    )
            outcome = {"status": "completed", "usage_bytes": sum(len(c.encode()) for c in chunks)}
        except (LeaseLost, Stopping, asyncio.CancelledError):
            raise
        except Exception as exc:
            if isinstance(exc, ExtractionError):
                code = "unsupported_file" if "unsupported file type" in str(exc) else "invalid_file"
                message = str(exc)
            elif isinstance(exc, LaminaError):
                code, message = "server_error", exc.message
            else:
                log.exception("ingestion of %s into %s failed", file_id, store_id)
                code, message = "server_error", f"ingestion failed: {exc!r}"
            outcome = {"status": "failed", "last_error": {"code": code, "message": message}}
        async with self._writing(store_id, file_id):
            await lease.check()
            current = await self.files.get(key)
            # A re-attach in another process writes a new record (new order) before replacing the job.
            if current is not None and current.order == record.order and current.status == "in_progress":
                if outcome["status"] == "failed":
                    with contextlib.suppress(Exception):
                        await self.providers[store.provider_id].delete_file_chunks(store_id, file_id)
                elif current.attributes != attributes:
                    await self._provider(store).update_attributes(store_id, file_id, current.attributes)
                await self.files.put(current.model_copy(update=outcome))
            await self.jobs.finish(job, lease.worker)

    async def rewrite(self, query: str) -> str:
        """The query as the configured chat model rewrites it for search (`rewrite_query`, as Llama Stack does it);
        the query itself when the model answers with nothing."""
        settings = self.settings.query_rewrite
        if settings.model is None:
            raise bad_request(
                "rewrite_query needs a model to rewrite queries with; this server sets none "
                "(apis.vector_io.query_rewrite.model in its run config)",
                param="rewrite_query",
            )
        asked = ChatCompletionRequest.model_validate(
            {
                "model": settings.model,
                "messages": [{"role": "user", "content": settings.prompt.replace("{query}", query)}],
                "temperature": 0,
                "max_tokens": settings.max_tokens,
            }
        )
        answer = await self.inference.chat_completion(asked)
        if not isinstance(answer, dict):  # a provider answers a request without `stream` with one object
            raise LaminaError(
                f"model '{settings.model}' streamed an answer that was not asked to stream",
                status=502,
                type="upstream_error",
            )
        choices = answer.get("choices") or [{}]
        content = (choices[0].get("message") or {}).get("content")
        rewritten = " ".join(content.split()) if isinstance(content, str) else ""  # one line: a query, not a text
        return rewritten or query

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        result = await self.inference.embeddings(
            EmbeddingRequest(model=model, input=texts, encoding_format="float", dimensions=None)
        )
        return [item["embedding"] for item in sorted(result["data"], key=lambda d: d["index"])]

    # -- activity

    async def _flush_activity_periodically(self) -> None:
        while True:
            await asyncio.sleep(ACTIVITY_FLUSH_SECONDS)
            try:
                await self._flush_activity(everything=False)
            except Exception:
                log.exception("recording vector store activity failed")

    async def _flush_activity(self, *, everything: bool) -> None:
        for store_id, seen in list(self.activity.items()):
            store = await self.stores.get(store_id)
            if store is None:
                self.activity.pop(store_id, None)
            elif seen - store.last_active_at >= (1 if everything else ACTIVITY_RESOLUTION):
                await self.stores.put(store.model_copy(update={"last_active_at": seen}))

    # -- search

    async def _find(
        self,
        store: StoreRecord,
        mode: Mode,
        vector: list[float] | None,
        text: str | None,
        k: int,
        filters: Filter | None,
        records: dict[str, FileRecord | None],
    ) -> list[Hit]:
        """The best k visible hits matching `filters`: the provider does what its capabilities say, the router
        the rest (see `lamina.apis.vector_io.provider`)."""
        provider = self._provider(store)
        capabilities = provider.capabilities
        if mode == "hybrid" and "hybrid" not in capabilities and {"vector", "keyword"} <= capabilities:
            depth = hybrid_depth(k)
            rankings = [
                await self._find(store, "vector", vector, None, depth, filters, records),
                await self._find(store, "keyword", None, text, depth, filters, records),
            ]
            return fuse(rankings)[:k]
        if mode not in capabilities:
            raise bad_request(
                f"vector store '{store.id}' is kept by provider '{store.provider_id}', which does no {mode} search",
                param="search_mode",
            )
        pushed = filters is None or "filters" in capabilities
        ask = k if pushed else max(4 * k, 40)
        total: int | None = None
        while True:
            hits = await provider.query(
                store.id, vector=vector, text=text, k=ask, filters=filters if pushed else None, mode=mode
            )
            kept = [
                hit
                for hit in hits
                if await self._visible(store.id, hit, records) and (pushed or matches(filters, hit.attributes))
            ]
            if len(kept) >= k or len(hits) < ask:
                return kept[:k]
            total = await provider.count(store.id) if total is None else total
            if ask >= total:
                return kept[:k]
            ask = min(ask * 4, total)

    async def _visible(self, store_id: str, hit: Hit, records: dict[str, FileRecord | None]) -> bool:
        """Chunks of files not (or no longer) completed are not search results."""
        if hit.file_id is None:
            return True
        if hit.file_id not in records:
            records[hit.file_id] = await self.files.get(f"{store_id}/{hit.file_id}")
        record = records[hit.file_id]
        return record is not None and record.status == "completed"

    async def _search(
        self,
        store: StoreRecord,
        mode: Mode,
        texts: list[str],
        vectors: list[list[float]] | None,
        k: int,
        filters: Filter | None,
        records: dict[str, FileRecord | None],
    ) -> list[Hit]:
        queries: list[tuple[list[float] | None, str | None]]
        if vectors is None:
            queries = [(None, text) for text in texts]
        elif mode == "vector":
            queries = [(vector, None) for vector in vectors]
        else:
            queries = list(zip(vectors, texts, strict=True))
        best: dict[str, Hit] = {}
        for vector, text in queries:  # several queries: a chunk keeps its best score
            for hit in await self._find(store, mode, vector, text, k, filters, records):
                if no_match(hit):  # the nearest of unrelated chunks is still unrelated
                    continue
                if hit.id not in best or hit.score > best[hit.id].score:
                    best[hit.id] = hit
        return sorted(best.values(), key=lambda hit: -hit.score)[:k]

    async def search(self, store_id: str, request: SearchRequest) -> dict[str, Any]:
        store = await self._store(store_id)
        queries = [request.query] if isinstance(request.query, str) else request.query
        if not queries or not all(q.strip() for q in queries):
            raise bad_request("query must not be empty", param="query")
        mode = request.search_mode
        ranker = request.ranking_options.ranker if request.ranking_options else "auto"
        reranked = ranker not in OPENAI_RANKERS
        if reranked and not self.reranker.knows(ranker):
            raise bad_request(
                f"ranker '{ranker}' is neither auto, default-2024-11-15, none nor a reranker model of the rerank API",
                param="ranking_options.ranker",
            )
        if request.rewrite_query:
            queries = [await self.rewrite(query) for query in queries]
        vectors = None if mode == "keyword" else await self.embed(store.embedding_model, queries)  # once
        records: dict[str, FileRecord | None] = {}
        k = request.max_num_results
        # A reranker reorders a deeper pool of candidates, so a chunk the search ranked just below k can make it.
        found = await self._search(
            store, mode, queries, vectors, hybrid_depth(k) if reranked else k, request.filters, records
        )
        if reranked and found:
            ranked = await self.reranker.rerank(ranker, " ".join(queries), [hit.content for hit in found], k)
            found = [found[index].model_copy(update={"score": score}) for index, score in ranked]
        threshold = request.ranking_options.score_threshold if request.ranking_options else 0.0
        filenames: dict[str, str] = {}
        data = []
        for hit in found:
            # OpenAI scores are in [0, 1] (a cosine may round above 1); a reranker's are on its model's own scale.
            score = hit.score if reranked else min(1.0, hit.score)
            if threshold > 0 and score < threshold:
                continue
            file_id = hit.file_id
            record = records.get(file_id) if file_id else None
            if file_id is not None and file_id not in filenames:
                try:
                    filenames[file_id] = (await self.files_api.get_file(file_id)).filename
                except LaminaError:
                    filenames[file_id] = ""
            data.append(
                {
                    "file_id": file_id or "",
                    "filename": filenames.get(file_id, "") if file_id else "",
                    "score": score,
                    "attributes": record.attributes if record is not None else hit.attributes,
                    "content": [{"type": "text", "text": hit.content}],
                }
            )
        self._touch(store_id)
        return {
            "object": "vector_store.search_results.page",
            "search_query": queries if len(queries) > 1 else queries[0],
            "data": data,
            "has_more": False,
            "next_page": None,
        }

    # -- raw vector IO

    async def insert_chunks(self, request: InsertRequest) -> dict[str, Any]:
        store = await self._store(request.vector_store_id, "update")
        missing = [i for i, c in enumerate(request.chunks) if c.embedding is None]
        vectors: list[list[float] | None] = [c.embedding for c in request.chunks]
        if missing:
            computed = await self.embed(store.embedding_model, [request.chunks[i].content for i in missing])
            for i, vector in zip(missing, computed, strict=True):
                vectors[i] = vector
        if len({len(v) for v in vectors if v is not None}) > 1:
            raise bad_request("all embeddings must have the same dimension", param="chunks")
        chunks = [Chunk(c.content, None, c.metadata, c.metadata) for c in request.chunks]
        ids = await self._provider(store).insert(store.id, chunks, vectors)
        self._touch(store.id)
        return {"object": "vector_io.insert", "vector_store_id": store.id, "inserted": len(ids), "chunk_ids": ids}

    async def query_chunks(self, request: QueryRequest) -> dict[str, Any]:
        store = await self._store(request.vector_store_id)
        texts = [request.query] if request.query is not None else [""]
        vectors: list[list[float]] | None = None
        if request.mode != "keyword":
            vectors = (
                [request.embedding] if request.embedding is not None else await self.embed(store.embedding_model, texts)
            )
        found = await self._search(store, request.mode, texts, vectors, request.k, request.filters, {})
        self._touch(store.id)
        return {
            "chunks": [{"id": hit.id, "content": hit.content, "metadata": hit.metadata} for hit in found],
            "scores": [hit.score for hit in found],
        }
