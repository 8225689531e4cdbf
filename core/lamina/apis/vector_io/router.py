"""The vector stores router: OpenAI's store, file and batch objects, ingestion in the background, search.

See `lamina.apis.vector_io` for the search modes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from lamina.apis.files.router import FilesRouter
from lamina.apis.inference.router import InferenceRouter
from lamina.apis.inference.types import EmbeddingRequest
from lamina.apis.vector_io.provider import Hit, VectorIOProvider
from lamina.apis.vector_io.search import fuse, matches, new_id, paginate, public
from lamina.apis.vector_io.types import (
    AttachFile,
    Attributes,
    ChunkingStrategy,
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

log = logging.getLogger("lamina")
STORES, FILES, BATCHES = "vector_stores/", "vector_store_files/", "vector_store_file_batches/"
POLL_AFTER_MS = "100"  # tells the openai client's *_and_poll helpers how soon to ask again


class VectorStoresRouter:
    def __init__(self, config: VectorIOConfig, providers: dict[str, VectorIOProvider], deps: RouterDeps) -> None:
        self.providers = providers
        self.kv = deps.storage.kv
        self.settings = config
        self.inference = deps.api(InferenceRouter)
        self.files_api = deps.api(FilesRouter)
        self.stores: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, dict[str, Any]]] = {}  # store id -> file id -> record
        self.batches: dict[str, dict[str, dict[str, Any]]] = {}
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.slots = asyncio.Semaphore(self.settings.ingestion_concurrency)

    async def start(self) -> None:
        for record in await self.kv.values(STORES):
            self.stores[record["id"]] = record
            self.files[record["id"]] = {}
            self.batches[record["id"]] = {}
        for record in await self.kv.values(FILES):
            if record["vector_store_id"] in self.stores:
                self.files[record["vector_store_id"]][record["id"]] = record
        for record in await self.kv.values(BATCHES):
            if record["vector_store_id"] in self.stores:
                self.batches[record["vector_store_id"]][record["id"]] = record
        interrupted = [f for files in self.files.values() for f in files.values() if f["status"] == "in_progress"]
        for record in interrupted:
            log.info("resuming ingestion of %s into %s", record["id"], record["vector_store_id"])
            self._schedule(record["vector_store_id"], record["id"])

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        # Cancelled ingestions stay `in_progress` on disk and resume at the next start.
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- records

    async def _save_store(self, store: dict[str, Any]) -> None:
        await self.kv.set(STORES + store["id"], store)

    async def _save_file(self, record: dict[str, Any]) -> None:
        await self.kv.set(f"{FILES}{record['vector_store_id']}/{record['id']}", record)

    async def _save_batch(self, batch: dict[str, Any]) -> None:
        await self.kv.set(f"{BATCHES}{batch['vector_store_id']}/{batch['id']}", batch)

    def _store(self, store_id: str) -> dict[str, Any]:
        store = self.stores.get(store_id)
        if store is None:
            raise not_found(f"vector store '{store_id}' not found", param="vector_store_id")
        return store

    def _file(self, store_id: str, file_id: str) -> dict[str, Any]:
        self._store(store_id)
        record = self.files[store_id].get(file_id)
        if record is None:
            raise not_found(f"file '{file_id}' is not in vector store '{store_id}'", param="file_id")
        return record

    def _provider(self, store: dict[str, Any]) -> VectorIOProvider:
        return self.providers[store["_provider_id"]]

    @staticmethod
    def _counts(records: list[dict[str, Any]]) -> dict[str, int]:
        counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
        for record in records:
            counts[record["status"]] += 1
        return {**counts, "total": len(records)}

    def store_view(self, store_id: str) -> dict[str, Any]:
        store = self._store(store_id)
        files = list(self.files[store_id].values())
        counts = self._counts(files)
        status = "in_progress" if counts["in_progress"] else "completed"
        if store.get("expires_at") and store["expires_at"] <= time.time():
            status = "expired"
        usage = sum(f["usage_bytes"] for f in files)
        return {**public(store), "file_counts": counts, "status": status, "usage_bytes": usage}

    def batch_view(self, store_id: str, batch_id: str) -> dict[str, Any]:
        self._store(store_id)
        batch = self.batches[store_id].get(batch_id)
        if batch is None:
            raise not_found(f"file batch '{batch_id}' not found in vector store '{store_id}'", param="batch_id")
        members = [self.files[store_id][f] for f in batch["_file_ids"] if f in self.files[store_id]]
        counts = self._counts(members)
        if batch["status"] == "cancelled" and not counts["in_progress"]:
            status = "cancelled"
        elif counts["in_progress"]:
            status = "cancelling" if batch["status"] == "cancelled" else "in_progress"
        else:
            status = "failed" if members and counts["failed"] == len(members) else "completed"
        return {**public(batch), "file_counts": counts, "status": status}

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
        for file_id in request.file_ids:
            await self.files_api.get_file(file_id)
        model = await self._embedding_model(request.embedding_model)
        now = int(time.time())
        store = {
            "id": new_id("vs_"),
            "object": "vector_store",
            "created_at": now,
            "name": request.name or "",
            "description": request.description,
            "usage_bytes": 0,
            "file_counts": {},
            "status": "completed",
            "expires_after": request.expires_after.model_dump() if request.expires_after else None,
            "expires_at": now + request.expires_after.days * 86400 if request.expires_after else None,
            "last_active_at": now,
            "metadata": request.metadata or {},
            "embedding_model": model,
            "_provider_id": provider_id,
            "_order": time.time_ns(),
        }
        await self.providers[provider_id].create_store(store["id"])
        self.stores[store["id"]] = store
        self.files[store["id"]] = {}
        self.batches[store["id"]] = {}
        await self._save_store(store)
        for file_id in request.file_ids:
            await self.attach(store["id"], AttachFile(file_id=file_id, chunking_strategy=request.chunking_strategy))
        return self.store_view(store["id"])

    def list_stores(self, query: PageQuery) -> dict[str, Any]:
        page = paginate(list(self.stores.values()), query)
        page["data"] = [self.store_view(s["id"]) for s in page["data"]]
        return page

    async def update_store(self, store_id: str, request: UpdateStore) -> dict[str, Any]:
        store = self._store(store_id)
        if request.name is not None:
            store["name"] = request.name
        if request.metadata is not None:
            store["metadata"] = request.metadata
        if "expires_after" in request.model_fields_set:
            store["expires_after"] = request.expires_after.model_dump() if request.expires_after else None
            store["expires_at"] = (
                store["last_active_at"] + request.expires_after.days * 86400 if request.expires_after else None
            )
        await self._save_store(store)
        return self.store_view(store_id)

    async def delete_store(self, store_id: str) -> None:
        store = self._store(store_id)
        for file_id in list(self.files[store_id]):
            await self._cancel_task(store_id, file_id)
        del self.stores[store_id]
        await self.kv.delete(STORES + store_id)
        for file_id in self.files.pop(store_id):
            await self.kv.delete(f"{FILES}{store_id}/{file_id}")
        for batch_id in self.batches.pop(store_id):
            await self.kv.delete(f"{BATCHES}{store_id}/{batch_id}")
        await self._provider(store).delete_store(store_id)

    # -- files

    async def attach(self, store_id: str, request: AttachFile, batch_id: str | None = None) -> dict[str, Any]:
        self._store(store_id)
        await self.files_api.get_file(request.file_id)  # 404 for an unknown file
        await self._cancel_task(store_id, request.file_id)
        record = {
            "id": request.file_id,
            "object": "vector_store.file",
            "usage_bytes": 0,
            "created_at": int(time.time()),
            "vector_store_id": store_id,
            "status": "in_progress",
            "last_error": None,
            "chunking_strategy": (request.chunking_strategy or ChunkingStrategy()).resolved(),
            "attributes": request.attributes or {},
            "_order": time.time_ns(),
        }
        self.files[store_id][request.file_id] = record
        await self._save_file(record)
        self._schedule(store_id, request.file_id)
        return public(record)

    def list_files(self, store_id: str, query: PageQuery, batch_id: str | None = None) -> dict[str, Any]:
        self._store(store_id)
        records = list(self.files[store_id].values())
        if batch_id is not None:
            self.batch_view(store_id, batch_id)
            members = set(self.batches[store_id][batch_id]["_file_ids"])
            records = [r for r in records if r["id"] in members]
        if query.filter:
            records = [r for r in records if r["status"] == query.filter]
        return paginate(records, query)

    async def update_file(self, store_id: str, file_id: str, attributes: Attributes | None) -> dict[str, Any]:
        record = self._file(store_id, file_id)
        record["attributes"] = attributes or {}
        await self._save_file(record)
        return public(record)

    async def detach(self, store_id: str, file_id: str) -> None:
        store = self._store(store_id)
        self._file(store_id, file_id)
        await self._cancel_task(store_id, file_id)
        del self.files[store_id][file_id]
        await self.kv.delete(f"{FILES}{store_id}/{file_id}")
        await self._provider(store).delete_file_chunks(store_id, file_id)

    async def file_content(self, store_id: str, file_id: str) -> dict[str, Any]:
        store = self._store(store_id)
        self._file(store_id, file_id)
        chunks = await self._provider(store).file_chunks(store_id, file_id)
        return {
            "object": "vector_store.file_content.page",
            "data": [{"type": "text", "text": text} for text in chunks],
            "has_more": False,
            "next_page": None,
        }

    # -- batches

    async def create_batch(self, store_id: str, request: CreateBatch) -> dict[str, Any]:
        self._store(store_id)
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
        batch = {
            "id": new_id("vsfb_"),
            "object": "vector_store.files_batch",
            "created_at": int(time.time()),
            "vector_store_id": store_id,
            "status": "in_progress",
            "_file_ids": [e.file_id for e in entries],
            "_order": time.time_ns(),
        }
        self.batches[store_id][batch["id"]] = batch
        await self._save_batch(batch)
        for entry in entries:
            await self.attach(store_id, entry, batch["id"])
        return self.batch_view(store_id, batch["id"])

    async def cancel_batch(self, store_id: str, batch_id: str) -> dict[str, Any]:
        self.batch_view(store_id, batch_id)
        batch = self.batches[store_id][batch_id]
        batch["status"] = "cancelled"
        await self._save_batch(batch)
        for file_id in batch["_file_ids"]:
            record = self.files[store_id].get(file_id)
            if record is not None and record["status"] == "in_progress":
                await self._cancel_task(store_id, file_id)
                record["status"] = "cancelled"
                await self._save_file(record)
                await self._provider(self.stores[store_id]).delete_file_chunks(store_id, file_id)
        return self.batch_view(store_id, batch_id)

    # -- ingestion

    def _schedule(self, store_id: str, file_id: str) -> None:
        task = asyncio.create_task(self._ingest(store_id, file_id), name=f"ingest {store_id}/{file_id}")
        self.tasks[(store_id, file_id)] = task
        task.add_done_callback(lambda done: self._forget(store_id, file_id, done))

    def _forget(self, store_id: str, file_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get((store_id, file_id)) is task:
            del self.tasks[(store_id, file_id)]

    async def _cancel_task(self, store_id: str, file_id: str) -> None:
        task = self.tasks.get((store_id, file_id))
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _ingest(self, store_id: str, file_id: str) -> None:
        from lamina.ingest import ExtractionError, chunk_text, extract_text

        async with self.slots:
            record = self.files[store_id][file_id]
            store = self.stores[store_id]
            provider = self._provider(store)
            try:
                file = await self.files_api.get_file(file_id)
                path = await self.files_api.file_path(file_id)
                text = await asyncio.to_thread(extract_text, path, file.filename)
                static = record["chunking_strategy"]["static"]
                chunks = chunk_text(text, static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])
                await provider.delete_file_chunks(store_id, file_id)  # what an interrupted run left
                size = self.settings.embedding_batch_size
                for start in range(0, len(chunks), size):
                    batch = chunks[start : start + size]
                    vectors = await self.embed(store["embedding_model"], batch)
                    metadata = [{"file_id": file_id, "chunk_index": start + i} for i in range(len(batch))]
                    await provider.insert(store_id, list(zip(batch, metadata, strict=True)), vectors)
                record["usage_bytes"] = sum(len(c.encode()) for c in chunks)
                record["status"] = "completed"
            except asyncio.CancelledError:
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
                record["status"] = "failed"
                record["last_error"] = {"code": code, "message": message}
                try:
                    await provider.delete_file_chunks(store_id, file_id)
                except Exception:
                    log.exception("could not remove the chunks of failed file %s", file_id)
            if self.files.get(store_id, {}).get(file_id) is record:
                await self._save_file(record)

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        result = await self.inference.embeddings(EmbeddingRequest(model=model, input=texts, encoding_format="float"))
        return [item["embedding"] for item in sorted(result["data"], key=lambda d: d["index"])]

    # -- search

    async def _ranked(
        self, store: dict[str, Any], queries: list[str], mode: str, k: int, embedding: list[float] | None = None
    ) -> list[Hit]:
        provider = self._provider(store)
        rankings: list[list[Hit]] = []
        if mode in ("vector", "hybrid"):
            vectors = [embedding] if embedding is not None else await self.embed(store["embedding_model"], queries)
            for vector in vectors:
                rankings.append(await provider.query_vector(store["id"], vector, k))
        if mode in ("keyword", "hybrid"):
            for text in queries:
                rankings.append(await provider.query_keyword(store["id"], text, k))
        if mode == "hybrid":
            return fuse(rankings)
        best: dict[int, Hit] = {}
        for ranking in rankings:  # several queries: a chunk keeps its best score
            for hit in ranking:
                if hit.id not in best or hit.score > best[hit.id].score:
                    best[hit.id] = hit
        return sorted(best.values(), key=lambda hit: -hit.score)

    async def _filtered(
        self,
        store: dict[str, Any],
        queries: list[str],
        mode: str,
        wanted: int,
        keep: Any,
        embedding: list[float] | None = None,
    ) -> list[tuple[Hit, dict[str, Any]]]:
        """The best `wanted` hits that `keep(hit)` accepts (it returns the hit's attributes or None).

        Providers rank without knowing attributes, so ask for more until enough pass or the store is exhausted.
        """
        total = await self._provider(store).count(store["id"])
        k = min(max(wanted * 4, 40), max(total, 1))
        while True:
            hits = await self._ranked(store, queries, mode, k, embedding)
            kept = [(hit, attributes) for hit in hits if (attributes := keep(hit)) is not None]
            if len(kept) >= wanted or k >= total:
                return kept[:wanted]
            k = min(k * 4, total)

    async def search(self, store_id: str, request: SearchRequest) -> dict[str, Any]:
        store = self._store(store_id)
        queries = [request.query] if isinstance(request.query, str) else request.query
        if not queries or not all(q.strip() for q in queries):
            raise bad_request("query must not be empty", param="query")
        records = self.files[store_id]

        def keep(hit: Hit) -> dict[str, Any] | None:
            file_id = hit.metadata.get("file_id")
            if file_id is None:  # a chunk inserted through /vector-io: its metadata are its attributes
                attributes = hit.metadata
            else:
                record = records.get(file_id)
                if record is None or record["status"] != "completed":
                    return None
                attributes = record["attributes"]
            return attributes if matches(request.filters, attributes) else None

        found = await self._filtered(store, queries, request.search_mode, request.max_num_results, keep)
        threshold = request.ranking_options.score_threshold if request.ranking_options else 0.0
        filenames: dict[str, str] = {}
        data = []
        for hit, attributes in found:
            score = min(1.0, max(0.0, hit.score))  # OpenAI scores are in [0, 1]; a negative cosine is no match
            if threshold > 0 and score < threshold:
                continue
            file_id = hit.metadata.get("file_id")
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
                    "attributes": attributes,
                    "content": [{"type": "text", "text": hit.content}],
                }
            )
        store["last_active_at"] = int(time.time())
        if store.get("expires_after"):
            store["expires_at"] = store["last_active_at"] + store["expires_after"]["days"] * 86400
            await self._save_store(store)
        return {
            "object": "vector_store.search_results.page",
            "search_query": queries if len(queries) > 1 else queries[0],
            "data": data,
            "has_more": False,
            "next_page": None,
        }

    # -- raw vector IO

    async def insert_chunks(self, request: InsertRequest) -> dict[str, Any]:
        store = self._store(request.vector_store_id)
        missing = [i for i, c in enumerate(request.chunks) if c.embedding is None]
        vectors: list[list[float] | None] = [c.embedding for c in request.chunks]
        if missing:
            computed = await self.embed(store["embedding_model"], [request.chunks[i].content for i in missing])
            for i, vector in zip(missing, computed, strict=True):
                vectors[i] = vector
        if len({len(v) for v in vectors if v is not None}) > 1:
            raise bad_request("all embeddings must have the same dimension", param="chunks")
        ids = await self._provider(store).insert(
            store["id"], [(c.content, c.metadata) for c in request.chunks], vectors
        )
        return {"object": "vector_io.insert", "vector_store_id": store["id"], "inserted": len(ids), "chunk_ids": ids}

    async def query_chunks(self, request: QueryRequest) -> dict[str, Any]:
        store = self._store(request.vector_store_id)
        records = self.files[store["id"]]

        def keep(hit: Hit) -> dict[str, Any] | None:
            file_id = hit.metadata.get("file_id")
            if file_id is not None:
                record = records.get(file_id)
                if record is None or record["status"] != "completed":
                    return None
                attributes = record["attributes"]
            else:
                attributes = hit.metadata
            return attributes if matches(request.filters, attributes) else None

        queries = [request.query] if request.query is not None else []
        embedding = request.embedding if request.mode == "vector" else None
        found = await self._filtered(store, queries, request.mode, request.k, keep, embedding)
        return {
            "chunks": [{"id": hit.id, "content": hit.content, "metadata": hit.metadata} for hit, _ in found],
            "scores": [hit.score for hit, _ in found],
        }
