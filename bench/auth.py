"""What authentication adds to a request: API keys, a Redis-backed rate limit, JWTs, against no auth, in one run.

    python bench/auth.py [--requests 3000]

Each variant is a real stack (`start_stack`, SQLite storage in a temporary folder) and its real ASGI app
(`create_app`: the auth middleware, Starlette's routing, the handler), called in-process for `GET /v1/version`
so that the network's noise does not drown sub-millisecond differences. Requests go round-robin over the
variant and a stack without auth (one each in turn, only those two running), and the report is each variant's
p50 and its difference from the unauthenticated p50 measured alongside it:

- api_keys: one key, verified once and then cached (`cache_seconds`), the issue's "cached verification".
- api_keys + redis rate limit: the same, plus `requests_per_minute` counted in Redis at 127.0.0.1:6379 (skipped
  when none answers; the bench's counters use a random prefix and are deleted). A Redis PING's round trip from
  the same process is printed for scale: the check is one command, so it cannot cost less than that.
- jwt, same token: a JWT verified once (JWKS fetched once from a server on 127.0.0.1), then cached.
- jwt, new token each request: RS256 signature verification of a token never seen, with the JWKS cached.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve_jwks(jwks: dict[str, Any]) -> tuple[str, Callable[[], None]]:
    body = json.dumps(jwks).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/jwks", server.shutdown


async def call(app: Any, token: str | None) -> int:
    headers = [(b"host", b"127.0.0.1:8321")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/v1/version", "raw_path": b"/v1/version", "root_path": "", "query_string": b"",
        "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8321),
    }  # fmt: skip
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def redis_up() -> bool:
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


async def main(requests: int) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from lamina.config import resolve
    from lamina.keys import create_key
    from lamina.plugins import make_plugin_manager
    from lamina.resolver import start_stack
    from lamina.server import create_app

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {"keys": [{**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1"}]}
    jwks_url, stop_jwks = serve_jwks(jwks)

    def sign(n: int) -> str:
        claims = {"sub": "alice", "exp": int(time.time()) + 3600, "jti": str(n)}
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

    fresh_tokens: list[str] = []  # signed when their variant's turn comes
    keys_provider = {"id": "keys", "type": "api_keys", "config": {"cache_seconds": 60}}
    jwt_provider = {"id": "sso", "type": "jwt", "config": {"jwks_url": jwks_url}}
    prefix = f"lamina-bench-{secrets.token_hex(4)}:"
    variants: dict[str, dict[str, Any]] = {
        "no auth": {},
        "api_keys (cached)": {"providers": [keys_provider]},
        "api_keys + redis rate limit": {
            "providers": [keys_provider],
            "quotas": {
                "redis_url": "redis://127.0.0.1:6379/0",
                "redis_prefix": prefix,
                "default": {"requests_per_minute": 10**9},
            },
        },
        "jwt, same token (cached)": {"providers": [jwt_provider]},
        "jwt, new token each request": {"providers": [jwt_provider]},
    }
    if not redis_up():
        print("no Redis at 127.0.0.1:6379: the Redis variant is skipped")
        del variants["api_keys + redis rate limit"]
    pm = make_plugin_manager()

    def token_of(name: str, api_key: str) -> Callable[[int], str | None]:
        if name.startswith("api_keys"):
            return lambda i: api_key
        if name.startswith("jwt, same"):
            same = sign(-1)
            return lambda i: same
        if name.startswith("jwt, new"):
            fresh_tokens.extend(sign(n) for n in range(requests))
            return lambda i: fresh_tokens[i]
        return lambda i: None

    # Each variant is measured against a stack without auth of its own, with only those two running: every stack
    # has threads (SQLite's), and on a busy machine more threads make any wait for I/O (Redis) longer.
    rows: list[tuple[str, float, float, float]] = []
    for name, auth in variants.items():
        if name == "no auth":
            continue
        async with AsyncExitStack() as exits:
            apps: dict[str, Any] = {}
            tokens: dict[str, Callable[[int], str | None]] = {}
            for label, section in (("no auth", {}), (name, auth)):
                folder = exits.enter_context(tempfile.TemporaryDirectory(prefix="lamina-bench-auth-"))
                config = resolve({"storage": {"dir": folder}, "auth": section}, f"<{label}>")
                stack = await exits.enter_async_context(start_stack(config, pm))
                apps[label] = create_app(stack)
                api_key, _ = await create_key(stack.storage.kv, "alice")
                tokens[label] = token_of(label, api_key)
            timings: dict[str, list[float]] = {label: [] for label in apps}
            gc.collect()  # each phase starts without the garbage of the previous ones
            for label, app in apps.items():  # warm up: the first verification, the JWKS fetch, imports
                assert await call(app, tokens[label](0)) == 200, label
            for i in range(requests):
                for label, app in apps.items():
                    started = time.perf_counter_ns()
                    status = await call(app, tokens[label](i))
                    timings[label].append((time.perf_counter_ns() - started) / 1e6)
                    assert status == 200, (label, status)
        base, p50 = statistics.median(timings["no auth"]), statistics.median(timings[name])
        rows.append((name, base, p50, statistics.quantiles(timings[name], n=10)[-1]))
    ping_ms: list[float] = []
    if "api_keys + redis rate limit" in variants:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
        for _ in range(min(requests, 1000)):
            started = time.perf_counter_ns()
            await client.ping()
            ping_ms.append((time.perf_counter_ns() - started) / 1e6)
        await client.aclose()
    stop_jwks()
    if "api_keys + redis rate limit" in variants:
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379)
        stale = list(client.scan_iter(match=f"{prefix}*"))
        if stale:
            client.delete(*stale)
        client.close()
    print(f"{requests} requests per variant, GET /v1/version through the ASGI app in-process, alternating with")
    print("a stack without auth (its p50 is the baseline of that row)\n")
    print("| variant | baseline p50 ms | p50 ms | p90 ms | added p50 ms |")
    print("|---|---|---|---|---|")
    for name, base, p50, p90 in rows:
        print(f"| {name} | {base:.3f} | {p50:.3f} | {p90:.3f} | {p50 - base:+.3f} |")
    if ping_ms:
        print(f"\nfor scale: one Redis PING round trip from this process, p50 {statistics.median(ping_ms):.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    asyncio.run(main(parser.parse_args().requests))
