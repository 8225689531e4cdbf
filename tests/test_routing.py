"""The server's route dispatch (`RoutesByHead`) answers every path as Starlette's own `Router` over the same routes:
the same route, the same 404 and 405, the same trailing-slash redirect."""

from __future__ import annotations

import asyncio
from typing import Any

from lamina.server import RoutesByHead
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router


def endpoint(name: str) -> Any:
    async def answer(request: Request) -> Response:
        return PlainTextResponse(f"{name} {dict(request.path_params)}")

    return answer


ROUTES: list[BaseRoute] = [
    Route("/health", endpoint("health"), methods=["GET"]),
    Route("/models", endpoint("list models"), methods=["GET"]),
    Route("/models/{model_id:path}", endpoint("get model"), methods=["GET"]),
    Route("/responses", endpoint("create response"), methods=["POST"]),
    Route("/responses", endpoint("list responses"), methods=["GET"]),
    Route("/responses/{response_id}", endpoint("get response"), methods=["GET"]),
    Route("/responses/{response_id}", endpoint("delete response"), methods=["DELETE"]),
    Route("/{anything}/meta", endpoint("any meta"), methods=["GET"]),  # a parameter first: may match any head
    Route("/responses/{response_id}/cancel", endpoint("cancel"), methods=["POST"]),
    Mount("/files", routes=[Route("/{file_id}", endpoint("file"), methods=["GET"])]),
    Route("/", endpoint("root"), methods=["GET"]),
]
PATHS = [
    "/health",
    "/health/",
    "/health/meta",
    "/models",
    "/models/",
    "/models/a/b",
    "/responses",
    "/responses/",
    "/responses/r1",
    "/responses/r1/",
    "/responses/meta",
    "/responses/r1/cancel",
    "/files/f1",
    "/files",
    "/nothing",
    "/nothing/meta",
    "/",
    "",
]


async def answer(app: Any, method: str, path: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"example")],
        "scheme": "http",
        "server": ("example", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers = [(k, v) for k, v in start["headers"] if k in (b"location", b"allow")]
    return start["status"], body, headers


def test_routes_by_head_answer_as_starlette_router_does() -> None:
    starlette, ours = Router(routes=ROUTES), RoutesByHead(ROUTES)
    for path in PATHS:
        for method in ("GET", "POST", "DELETE"):
            expected = asyncio.run(answer(starlette, method, path))
            assert asyncio.run(answer(ours, method, path)) == expected, (method, path)
    assert ours.routes == ROUTES  # what `Mount.routes` (the route table) reads
