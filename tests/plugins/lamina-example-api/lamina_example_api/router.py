"""The notes router: picks the tagger, keeps notes in the stack's storage."""

from __future__ import annotations

import lamina
from lamina.storage import Registry

from lamina_example_api.provider import Tagger
from lamina_example_api.types import CreateNote, Note, NotesConfig


class NotesRouter:
    def __init__(self, config: NotesConfig, providers: dict[str, Tagger], notes: Registry[Note]) -> None:
        self.config = config
        self.providers = providers
        self.notes = notes

    async def create(self, request: CreateNote) -> Note:
        if len(request.text) > self.config.max_chars:
            raise lamina.bad_request(f"a note holds at most {self.config.max_chars} characters", param="text")
        provider_id = request.provider_id or next(iter(self.providers), None)
        if provider_id is None:
            raise lamina.bad_request("no notes provider is configured; add one under providers.notes")
        if provider_id not in self.providers:
            raise lamina.bad_request(f"unknown notes provider '{provider_id}'", param="provider_id")
        tags = await self.providers[provider_id].tags(request.text)
        return await self.notes.put(Note(text=request.text, tags=tags, provider_id=provider_id))

    async def get(self, note_id: str) -> Note:
        note = await self.notes.get(note_id)
        if note is None:
            raise lamina.not_found(f"note '{note_id}' not found", param="note_id")
        return note

    async def list(self) -> list[Note]:
        return sorted(await self.notes.list(), key=lambda note: note.created)

    async def delete(self, note_id: str) -> None:
        if not await self.notes.delete(note_id):
            raise lamina.not_found(f"note '{note_id}' not found", param="note_id")
