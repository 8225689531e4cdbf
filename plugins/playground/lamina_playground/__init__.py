"""lamina-playground: a browser playground served by the Lamina server under `/playground`.

Plain HTML, CSS and ES modules shipped as package data: no build step, no CDN, works offline. The page talks to
the server's own `/v1` API like any client, with the API key the user gives it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.resources import files
from typing import TYPE_CHECKING

import lamina
from lamina.http import error_response
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from lamina.resolver import Stack

log = logging.getLogger("lamina.playground")
PREFIX = "/playground"
STATIC = files("lamina_playground") / "static"
# The page loads nothing but its own files and talks only to this server.
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"


def playground_app() -> ASGIApp:
    """The static files, gzipped, with a content security policy that keeps the page to this origin."""
    static = GZipMiddleware(StaticFiles(directory=str(STATIC), html=True), minimum_size=256)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                headers["X-Content-Type-Options"] = "nosniff"
                # Revalidate (cheap: ETag) so an upgraded package's files are seen at once.
                headers["Cache-Control"] = "no-cache"
            await send(message)

        try:
            await static(scope, receive, send_with_policy)
        except HTTPException as exc:  # raised before anything is sent; outside a Starlette app nobody answers it
            error = lamina.not_found(f"no playground file {scope['path']}") if exc.status_code == 404 else None
            error = error or lamina.LaminaError(str(exc.detail), status=exc.status_code)
            await error_response(error)(scope, receive, send)

    return app


def mount_playground(app: ASGIApp) -> ASGIApp:
    """Serve the playground under PREFIX; every other request goes to `app` untouched."""
    playground = playground_app()

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await app(scope, receive, send)
        elif path == PREFIX:  # relative links in the page need the trailing slash
            await RedirectResponse(scope.get("root_path", "") + PREFIX + "/", status_code=308)(scope, receive, send)
        else:
            # As Starlette's Mount does: the path stays whole and the prefix moves to root_path.
            await playground(dict(scope, root_path=scope.get("root_path", "") + PREFIX), receive, send)

    return wrapped


@lamina.hookimpl
def asgi_wrapper(stack: Stack) -> Callable[[ASGIApp], ASGIApp]:
    log.info("playground at %s/ (lamina-playground)", PREFIX)
    return mount_playground
