"""Server-level protections, one ASGI wrapper in front of every route: request body limits, a pause limit while
a body arrives, Host checks against DNS rebinding, refusal of browser cross-origin writes, and opt-in CORS.

Each refusal is an OpenAI-shaped error answered before the route runs (or, for a body that grows past the limit
while streaming, as soon as the limit is passed). The run config's `server:` section sets the numbers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lamina.config import RunConfig
from lamina.errors import LaminaError
from lamina.http import error_response

log = logging.getLogger("lamina")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def auth_configured(config: RunConfig) -> bool:
    """Whether the run config turns authentication on (its `auth:` section lists a provider). The one place
    that asks, so the protections meant for servers without auth follow the auth section."""
    return bool(config.auth.providers)


def is_loopback(host: str) -> bool:
    """`host` (a name or address, IPv6 with or without brackets) names this machine's loopback interface."""
    host = host.strip("[]").lower().rstrip(".")
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The name part of a Host header: `[::1]:8321` → `::1`, `example.com:80` → `example.com`."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def warn_if_exposed(config: RunConfig) -> None:
    """Log a warning when the server listens beyond loopback with nothing checking who calls it."""
    if not is_loopback(config.server.host) and not auth_configured(config):
        log.warning(
            "listening on %s without authentication: anyone who can reach this address can use every API "
            "(bind to 127.0.0.1, or configure `auth:` in the run config)",
            config.server.host,
        )


def guard(app: ASGIApp, config: RunConfig, raw_bodies: set[tuple[str, str]]) -> ASGIApp:
    """Wrap `app` with the protections `config.server` asks for. `raw_bodies` holds the (method, path) of routes
    that stream their body themselves (file uploads): their size limit is their own, not `max_body_bytes`."""
    server = config.server
    check_host = is_loopback(server.host) and not auth_configured(config)
    allowed_hosts = {h.lower() for h in server.allowed_hosts}
    any_origin = "*" in server.cors_origins
    allowed_origins = set(server.cors_origins)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = None if (scope["method"], scope["path"]) in raw_bodies else server.max_body_bytes
        refusal = _refusal(scope, headers, check_host, allowed_hosts, any_origin, allowed_origins, limit)
        if refusal is not None:
            # The body is left unread: the server closes the connection after the answer instead of reading it.
            await error_response(refusal)(scope, receive, send)
            return
        await app(scope, _limited(receive, limit, server.body_timeout), send)

    if server.cors_origins:
        # Preflights and CORS headers; the checks above still refuse origins not listed.
        return CORSMiddleware(
            guarded,
            allow_origins=server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["openai-poll-after-ms"],
        )
    return guarded


def _refusal(
    scope: Scope,
    headers: Headers,
    check_host: bool,
    allowed_hosts: set[str],
    any_origin: bool,
    allowed_origins: set[str],
    limit: int | None,
) -> LaminaError | None:
    if check_host:
        # A page on evil.example whose name now resolves to 127.0.0.1 (DNS rebinding) still sends its own name.
        name = _host_name(headers.get("host", "")).lower()
        if name and not (is_loopback(name) or name in allowed_hosts):  # no Host at all: HTTP/1.0, not a browser
            return LaminaError(
                f"Host '{name}' is not served here: this server listens on loopback and answers only loopback "
                "names (add the name to server.allowed_hosts to accept it)",
                status=421,
                type="invalid_request_error",
                code="misdirected_request",
            )
    origin = headers.get("origin")
    # A page this server serves (the playground) writes same-origin, and browsers send Origin on those too; a
    # rebinding page's own name is same-origin as well, but the Host check above has refused it already.
    same_origin = origin == f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
    allowed = any_origin or same_origin or origin in allowed_origins
    if origin is not None and scope["method"] in WRITE_METHODS and not allowed:
        # Browsers send Origin on cross-origin writes; a page must not drive a server the user runs locally.
        return LaminaError(
            f"requests from the browser origin '{origin}' are not allowed (list it in server.cors_origins)",
            status=403,
            type="permission_error",
            code="origin_not_allowed",
        )
    length = headers.get("content-length", "")
    if limit is not None and length.isdigit() and int(length) > limit:
        return body_too_large(limit)
    return None


def body_too_large(limit: int) -> LaminaError:
    return LaminaError(
        f"request body is larger than this server's limit of {limit} bytes (server.max_body_bytes)",
        status=413,
        code="request_too_large",
    )


def _limited(receive: Receive, limit: int | None, pause: float) -> Receive:
    """`receive` that counts the body's bytes (413 past `limit`) and allows `pause` seconds between its chunks
    (408 after). Once the body is complete, receiving (waiting for a disconnect) has no time limit."""
    received = 0
    complete = False

    async def limited() -> Message:
        nonlocal received, complete
        if complete:
            return await receive()
        try:
            async with asyncio.timeout(pause):  # no task per call, unlike wait_for
                message = await receive()
        except TimeoutError:
            raise LaminaError(
                f"the request body stopped arriving for {pause:g}s (server.body_timeout)",
                status=408,
                code="request_timeout",
            ) from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if limit is not None and received > limit:
                raise body_too_large(limit)
            complete = not message.get("more_body", False)
        else:
            complete = True
        return message

    return limited
