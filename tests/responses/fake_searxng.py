"""A fake SearXNG (and Brave search API) on 127.0.0.1 for the web search tests: `GET /search?q=...&format=json` answers SearXNG's JSON
shape with results made from the query, and records every query (and its headers) so a test can prove the search
ran. `failing` makes it answer 500, as a broken search backend would."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from lamina.testing import serve_app


def results_for(query: str) -> list[dict[str, Any]]:
    slug = "-".join(query.lower().split())[:40]
    return [
        {"url": f"https://example.org/{slug}/{n}", "title": f"{query} — page {n}", "content": f"About {query}, {n}."}
        for n in (1, 2)
    ]


class FakeSearxng:
    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.failing = False
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def search(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        self.headers.append(dict(request.headers))
        if self.failing:
            return web.Response(status=500, text="engine crashed")
        if request.query.get("format") != "json":
            return web.Response(status=403, text="format not allowed")
        query = request.query.get("q", "")
        # Extra fields of SearXNG's answer, and a result without a URL, which the provider must skip.
        hits = [*results_for(query), {"title": "no url", "content": "x"}]
        return web.json_response({"query": query, "number_of_results": len(hits), "results": hits, "answers": []})

    async def brave(self, request: web.Request) -> web.StreamResponse:
        """Brave's web search API: the same results in its shape, for a subscription token."""
        self.queries.append(dict(request.query))
        self.headers.append(dict(request.headers))
        if request.headers.get("X-Subscription-Token") != "brave-key":
            return web.json_response({"error": "bad token"}, status=401)
        hits = [
            {"url": r["url"], "title": r["title"], "description": r["content"]} for r in results_for(request.query["q"])
        ]
        return web.json_response({"type": "search", "web": {"type": "search", "results": hits}})

    def __enter__(self) -> FakeSearxng:
        app = web.Application()
        app.router.add_get("/search", self.search)
        app.router.add_get("/res/v1/web/search", self.brave)
        self.served = serve_app(app, port=0, name="fake-searxng").__enter__()
        self.port = self.served.port
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.served.__exit__(*exc_info)
