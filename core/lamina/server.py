"""The HTTP server: a Starlette app over a started stack, served by hypercorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pluggy
from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lamina import __version__
from lamina.auth import protect, usage_endpoint
from lamina.config import ConfigError, RunConfig, redact
from lamina.errors import LaminaError, StorageUnavailable, bad_request, not_found
from lamina.guard import guard, warn_if_exposed
from lamina.http import ApiRoute, error_response, json_response, prefix_of, stack_of
from lamina.openapi import openapi_document
from lamina.requestlog import with_request_ids
from lamina.resolver import Stack, start_stack

if TYPE_CHECKING:
    from hypercorn.config import Config

log = logging.getLogger("lamina")


async def health(request: Request) -> Response:
    return json_response({"status": "OK"})


READY_TIMEOUT_SECONDS = 5.0


async def ready(request: Request) -> Response:
    """Readiness (a load balancer's or Kubernetes' `readinessProbe`): 200 once the stores the stack keeps state in
    answer, else 503 `storage_unavailable` naming the one that does not. `/v1/health` only says the process serves.

    The storage backend answers a read; every provider with a `ready()` coroutine (those whose state lives in a
    service, such as a database) is asked too."""
    stack = stack_of(request)
    checks: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        (stack.config.storage.type, lambda: stack.storage.kv.get("health/ready"))
    ]
    for provider_id, provider in stack.providers.items():
        check = getattr(provider, "ready", None)
        if check is not None:
            checks.append((provider_id, check))
    for name, check in checks:
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await check()
        except TimeoutError:
            raise StorageUnavailable(name, f"no answer within {READY_TIMEOUT_SECONDS:g} s") from None
    return json_response({"status": "OK"})


async def version(request: Request) -> Response:
    return json_response({"version": __version__})


def describe_provider(stack: Stack, provider_id: str) -> dict[str, Any]:
    spec = stack.provider_specs[provider_id]
    return {
        "provider_id": provider_id,
        "api": spec.api,
        "provider_type": spec.type,
        "package": spec.package,
        "version": spec.version,
        # The validated config, defaults included, as the provider runs with it; secrets masked.
        "config": redact(stack.provider_configs[provider_id].model_dump(mode="json")),
        # Llama Stack's field: what its providers' health checks say. Lamina's providers have none (an upstream's
        # state shows in the errors naming it), which Llama Stack reports this way.
        "health": {"status": "Not Implemented"},
    }


async def list_providers(request: Request) -> Response:
    stack = stack_of(request)
    return json_response({"object": "list", "data": [describe_provider(stack, pid) for pid in stack.providers]})


async def get_provider(request: Request) -> Response:
    stack = stack_of(request)
    provider_id = request.path_params["provider_id"]
    if provider_id not in stack.providers:
        raise not_found(f"provider '{provider_id}' not found", param="provider_id")
    return json_response(describe_provider(stack, provider_id))


API_LEVELS = ("v1", "v1alpha", "v1beta")


async def inspect_routes(request: Request) -> Response:
    """Every route, one entry per method: ours (`path`, `methods`, `api`) and Llama Stack's fields (`route`,
    `method`, `provider_types`). `?api_filter=v1|v1alpha|v1beta` keeps the routes of that level, as Llama Stack's
    does; `deprecated` keeps Lamina's deprecated routes, of which there are none."""
    api_filter = request.query_params.get("api_filter")
    if api_filter is not None and api_filter not in (*API_LEVELS, "deprecated"):
        raise bad_request(f"api_filter must be one of {', '.join(API_LEVELS)}, deprecated", param="api_filter")
    specs = stack_of(request).provider_specs.values()
    routes = []
    for api, r in request.app.state.route_owners:
        path = prefix_of(r) + r.path
        if api_filter is not None and path.split("/")[1] != api_filter:
            continue
        methods = sorted(r.methods or [])
        provider_types = sorted({spec.type for spec in specs if spec.api == api})
        for method in methods:
            if method != "HEAD":
                routes.append(
                    {
                        "path": path,
                        "methods": methods,
                        "api": api,
                        "route": path,
                        "method": method,
                        "provider_types": provider_types,
                    }
                )
    return json_response({"object": "list", "data": routes})


async def inspect_config(request: Request) -> Response:
    """The run config the server was started with, after substitution, secrets masked (URLs' passwords too)."""
    config = stack_of(request).config
    return json_response({"source": config.source, "config": redact(config.model_dump(mode="json"))})


async def openapi(request: Request) -> Response:
    return json_response(openapi_document(request.app.state.route_owners, __version__))


async def lamina_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LaminaError)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
    message = {404: f"no route {request.method} {request.url.path}", 405: f"method {request.method} not allowed"}
    response = error_response(
        LaminaError(message.get(exc.status_code, str(exc.detail)), status=exc.status_code, type=kind)
    )
    if exc.status_code == 405:
        response.headers["allow"] = ", ".join(allowed_methods(request))
    return response


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    path = request.url.path  # the whole path, its prefix included, inside the mount as outside it
    owners: list[tuple[str, BaseRoute]] = request.app.state.route_owners
    methods = {
        method
        for _, r in owners
        if isinstance(r, Route)
        and path.startswith(prefix_of(r) + "/")
        and r.path_regex.match(path.removeprefix(prefix_of(r)))
        for method in r.methods or ()
    }
    return sorted(methods)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # Logged by `catch_unexpected`, which sees the exception Starlette re-raises after this answer.
    return error_response(LaminaError("internal server error", status=500, type="server_error"))


def catch_unexpected(app: ASGIApp) -> ASGIApp:
    """Log an exception nothing else handled once, and keep it from the server.

    Starlette answers it (through `unexpected_error`) and then re-raises it for the server to log, which logged
    every traceback a second time.
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, receive, tracking_send)
        except Exception as exc:
            if scope["type"] != "http":
                raise
            log.error(
                "unhandled error on %s %s: %s: %s",
                scope["method"],
                scope["path"],
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            if not started:
                await error_response(LaminaError("internal server error", status=500, type="server_error"))(
                    scope, receive, send
                )

    return guarded


ADMIN = "/v1alpha/admin"


def _served_under(prefix: str, meta: Route) -> ApiRoute:
    """`meta` again under `prefix`, so the route table, `/v1/inspect/routes` and the OpenAPI document show it."""
    alias = ApiRoute(meta.path, meta.endpoint, methods=["GET"])
    alias.prefix = prefix
    return alias


class RoutesByHead:
    """`routes` served as one Starlette `Router` would serve them, trying only the routes that can match a path.

    A router tries its routes in turn, and an API registered late (the Responses API's are ~80th under /v1) paid
    for every route before it on each request (~0.1 ms). Here a path's first segment picks a router of the routes
    whose first segment is that literal, or is not a literal (a parameter), in their order: every route that can
    match is among them, so the route chosen, a 405 and a trailing-slash redirect are the same."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.routes = routes
        self.everything = Router(routes=routes)  # paths no literal first segment names: only parameters can match
        heads = {_head(r) for r in routes} - {None}
        self.by_head = {h: Router(routes=[r for r in routes if _head(r) in (h, None)]) for h in heads}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self.everything
        if scope["type"] == "http":
            router = self.by_head.get(get_route_path(scope)[1:].partition("/")[0], router)
        await router(scope, receive, send)


def _head(route: BaseRoute) -> str | None:
    """The literal first segment of a route's path (`responses` of `/responses/{response_id}`), or None when it
    may match any (a parameter, or a kind of route without a path)."""
    path = route.path if isinstance(route, (Route, Mount)) else ""
    if not path.startswith("/"):
        return None
    head = path[1:].partition("/")[0]
    return None if "{" in head else head


def routes_app(stack: Stack) -> Starlette:
    """Every API's routes and the meta routes, under /v1; `Stack.http_app` keeps the one instance."""
    meta = [
        Route("/health", health),
        Route("/health/ready", ready),
        Route("/version", version),
        Route("/providers", list_providers),
        Route("/providers/{provider_id}", get_provider),
        Route("/inspect/routes", inspect_routes),
        Route("/inspect/config", inspect_config),
        Route("/openapi.json", openapi),
    ]
    # Llama Stack's clients ask for the same information under /v1alpha/admin (and for usage, ours alone).
    admin = [_served_under(ADMIN, r) for r in [*meta, Route("/usage", usage_endpoint)]]
    owners: list[tuple[str, BaseRoute]] = [*(("meta", r) for r in meta), *(("admin", r) for r in admin)]
    for name, spec in stack.api_specs.items():
        owners += [(name, r) for r in spec.routes]
    # Longest first: `/v1alpha/admin` must take its paths before an API's `/v1alpha` mount would.
    prefixes = sorted({prefix_of(r) for _, r in owners} - {"/v1"}, reverse=True)
    app = Starlette(
        routes=[
            Mount("/v1", app=RoutesByHead([r for _, r in owners if prefix_of(r) == "/v1"])),
            *(Mount(prefix, app=RoutesByHead([r for _, r in owners if prefix_of(r) == prefix])) for prefix in prefixes),
        ],
        exception_handlers={LaminaError: lamina_error, HTTPException: http_error, Exception: unexpected_error},
    )
    app.state.stack = stack
    app.state.route_owners = owners
    return app


def create_app(stack: Stack) -> ASGIApp:
    """The stack's HTTP app: its routes, wrapped by the HTTP edge's middleware and the plugins' `asgi_wrapper`s."""
    app = stack.http_app()
    owners: list[tuple[str, BaseRoute]] = app.state.route_owners
    streamed = {
        (m, prefix_of(r) + r.path) for _, r in owners if isinstance(r, ApiRoute) and r.form for m in r.methods or ()
    }
    # Outermost first: request ids (so every error carries one), the edge's guards (Host, origin, body limits),
    # then authentication, then the routes.
    wrapped = with_request_ids(guard(catch_unexpected(protect(app, stack)), stack.config, streamed))
    wrappers: list[Callable[[ASGIApp], ASGIApp] | None] = stack.pm.hook.asgi_wrapper(stack=stack)
    for wrapper in wrappers:
        if wrapper is not None:
            wrapped = wrapper(wrapped)
    return wrapped


def bind(config: RunConfig, hconfig: Config | None = None) -> socket.socket:
    """The server's socket, bound (not yet listening). Bound before the stack starts, which may load models for a
    while: a port in use fails at once, in one line."""
    from hypercorn.config import Config

    hconfig = hconfig or Config()
    hconfig.bind = [f"{config.server.host}:{config.server.port}"]
    try:
        sockets = hconfig.create_sockets()
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}; "
            "stop what is using it or choose another port (--port N)"
        ) from None
    return sockets.insecure_sockets[0]


async def serve(
    config: RunConfig,
    *,
    pm: pluggy.PluginManager | None = None,
    ready: Callable[[int], None] | None = None,
    shutdown: asyncio.Event | None = None,
    listener: socket.socket | None = None,
) -> None:
    """Start the stack and serve it until SIGINT/SIGTERM (or `shutdown` is set); `ready(port)` on start.

    `pm` is the plugin manager to build it from (default: a new one with every installed plugin); `listener` a
    listening socket to serve instead of binding one (`lamina.workers` hands each worker the same one).
    """
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    shutdown = shutdown or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread: the caller owns shutdown
            loop.add_signal_handler(sig, shutdown.set)
    hconfig = Config()
    hconfig.bind = [f"{config.server.host}:{config.server.port}"]
    hconfig.accesslog = logging.getLogger("lamina.access") if config.server.access_log else None
    # The path without its query string: some queries carry credentials (`?authorization=` of the tool routes).
    hconfig.access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
    hconfig.errorlog = logging.getLogger("hypercorn.error")  # through our logging, printed once
    # Idle connections, and requests whose headers take this long, are closed (hypercorn times both with it).
    # No hypercorn read_timeout: it would cut long responses (a client sends nothing while it waits); a body that
    # stops arriving is timed by lamina.guard instead.
    hconfig.keep_alive_timeout = config.server.idle_timeout
    warn_if_exposed(config)
    hconfig.graceful_timeout = 3
    if listener is None:
        listener = bind(config, hconfig)
    handed_over = False  # hypercorn closes the socket it serves; until then it is ours to close
    try:
        async with start_stack(config, pm) as stack:
            app = create_app(stack)
            port = listener.getsockname()[1]
            # Listen now, so whoever `ready` tells about the port can connect at once (hypercorn listens later).
            listener.listen(hconfig.backlog)
            hconfig.bind = [f"fd://{listener.fileno()}"]
            log.info("Lamina %s serving %s on http://%s:%d/v1", __version__, config.distro, config.server.host, port)
            if ready:
                ready(port)
            handed_over = True
            # The same ASGI protocol, typed twice: Starlette's messages are MutableMappings, hypercorn's TypedDicts.
            await hypercorn_serve(app, hconfig, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
    finally:
        if not handed_over:
            listener.close()
