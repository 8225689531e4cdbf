"""Requests a router makes on a caller's behalf (a batch's lines), served by the stack's own routes in-process.

They go through the same routes as HTTP requests, so each line is validated, guarded and answered exactly as it
would be over the wire, and an endpoint a plugin adds is batchable with no code here. They skip the HTTP edge
(its middleware: host checks, body limits, telemetry of client requests), which is about connections they do not
have.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.routing import Route
from starlette.types import ASGIApp, Message

from lamina.http import prefix_of


async def call(app: ASGIApp, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """Send one request to `app`; return its status and body. A route that raises is a 500, as over HTTP."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": None,
        "server": None,
        "state": {},
    }
    received = False
    status = 500
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Future()  # never disconnects; cancelled when the response is done
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, send)
    except Exception:
        # Starlette re-raises an unexpected error after its handler has answered (the server logs it once).
        if not chunks:
            return 500, b'{"error": {"message": "internal error", "type": "server_error", "param": null, "code": null}}'
    return status, b"".join(chunks)


def serves(app: ASGIApp, method: str, path: str) -> bool:
    """Whether one of the stack's API routes answers `method path` (path as the client sends it, `/v1/...`)."""
    owners: list[tuple[str, Route]] = getattr(getattr(app, "state", None), "route_owners", [])
    return any(
        path == prefix_of(route) + route.path and method in (route.methods or ()) for _, route in owners if route.path
    )
