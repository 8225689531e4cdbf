"""The notes API's HTTP routes, mounted under /v1: parse, call the router, answer."""

from __future__ import annotations

from lamina.http import json_response, parse_body, route, router_of
from starlette.requests import Request
from starlette.responses import Response

from lamina_example_api.router import NotesRouter
from lamina_example_api.types import CreateNote, Note, NoteDeleted, NoteList


async def create_note(request: Request) -> Response:
    """Create a note, tagged by a provider."""
    body = await parse_body(request, CreateNote)
    return json_response(await router_of(request, NotesRouter).create(body))


async def list_notes(request: Request) -> Response:
    """List notes, oldest first."""
    return json_response(NoteList(data=await router_of(request, NotesRouter).list()))


async def get_note(request: Request) -> Response:
    """Retrieve a note."""
    return json_response(await router_of(request, NotesRouter).get(request.path_params["note_id"]))


async def delete_note(request: Request) -> Response:
    """Delete a note."""
    note_id = request.path_params["note_id"]
    await router_of(request, NotesRouter).delete(note_id)
    return json_response(NoteDeleted(id=note_id))


ROUTES = [
    route("POST", "/notes", create_note, body=CreateNote, response=Note),
    route("GET", "/notes", list_notes, response=NoteList),
    route("GET", "/notes/{note_id}", get_note, response=Note),
    route("DELETE", "/notes/{note_id}", delete_note, response=NoteDeleted),
]
