"""A fake Jina/Cohere-style reranker (`POST /v1/rerank`, as vLLM and llama.cpp's server serve it) on 127.0.0.1.

    with FakeReranker() as fake:        # a real aiohttp server in a thread of its own
        fake.base_url                   # http://127.0.0.1:<port>/v1
        fake.scoring = "reverse"        # the last document scores highest

Scoring is deterministic so tests can compute what they expect: `"overlap"` (the default) scores a document by
the share of the query's words it contains; `"reverse"` scores document i of n as (i + 1) / n, which reverses
whatever order the documents came in. `fake.status` answers every request with that status instead.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from lamina.testing import serve_app

MODEL = "bge-reranker-fake"


def overlap(query: str, document: str) -> float:
    wanted = set(query.lower().split())
    return len(wanted & set(document.lower().replace(".", " ").split())) / max(len(wanted), 1)


class FakeReranker:
    def __init__(self) -> None:
        self.scoring = "overlap"
        self.status = 200
        self.requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def scores(self, query: str, documents: list[str]) -> list[float]:
        if self.scoring == "reverse":
            return [(i + 1) / len(documents) for i in range(len(documents))]
        return [overlap(query, document) for document in documents]

    async def handle_rerank(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.status != 200:
            return web.json_response({"error": {"message": f"scripted {self.status}"}}, status=self.status)
        if body.get("model") != MODEL:
            return web.json_response({"error": {"message": f"no model {body.get('model')}"}}, status=404)
        scores = self.scores(body["query"], body["documents"])
        results = sorted(
            (
                {"index": i, "relevance_score": s, "document": {"text": d}}
                for i, (s, d) in enumerate(zip(scores, body["documents"], strict=True))
            ),
            key=lambda r: -r["relevance_score"],
        )
        if body.get("top_n") is not None:
            results = results[: body["top_n"]]
        return web.json_response({"id": "rerank-1", "model": MODEL, "results": results, "usage": {"total_tokens": 1}})

    def __enter__(self) -> FakeReranker:
        app = web.Application()
        app.router.add_post("/v1/rerank", self.handle_rerank)
        self.served = serve_app(app, port=0, name="fake-rerank").__enter__()
        self.port = self.served.port
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.served.__exit__(*exc_info)
