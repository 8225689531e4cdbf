"""A fast OpenAI-compatible fake upstream for benchmarks: `python bench/fake_upstream.py PORT [--varied]`.

`--varied`: each text gets an embedding of its own (seeded by the text), for benches whose vector index must see
distinct vectors; by default every embedding is the same constant, the cheapest answer."""

from __future__ import annotations

import json
import random
import sys

from aiohttp import web

CHUNKS = 16
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "bench",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "word " * CHUNKS}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS},
    }
).encode()
CHUNK = (
    b"data: "
    + json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "bench",
            "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}],
        }
    ).encode()
    + b"\n\n"
)


async def models(request: web.Request) -> web.Response:
    return web.json_response(
        {"object": "list", "data": [{"id": "bench", "object": "model"}, {"id": "bench-embed", "object": "model"}]}
    )


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.Response(body=COMPLETION, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    # One write per event, as a real server flushes each token.
    for _ in range(CHUNKS):
        await response.write(CHUNK)
    await response.write(b"data: [DONE]\n\n")
    return response


EMBEDDING = [0.125] * 384
VARIED = "--varied" in sys.argv


def embedding_of(text: str) -> list[float]:
    if not VARIED:
        return EMBEDDING
    draw = random.Random(text).random
    return [draw() - 0.5 for _ in range(384)]


async def embeddings(request: web.Request) -> web.Response:
    body = await request.json()
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [{"object": "embedding", "index": i, "embedding": embedding_of(text)} for i, text in enumerate(inputs)]
    usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
    return web.json_response({"object": "list", "model": "bench-embed", "data": data, "usage": usage})


def main() -> None:
    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
