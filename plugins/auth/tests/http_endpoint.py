"""A tiny HTTP server on 127.0.0.1 whose answers a test sets: the JWKS endpoint and the custom auth endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, Any]


class Endpoint:
    """Answers GET and POST with `self.answer(method, body)` -> (status, JSON); counts the requests."""

    def __init__(self) -> None:
        self.answer: Callable[[str, Any], Answer] = lambda method, body: (404, {})
        self.requests: list[tuple[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                endpoint.requests.append((method, body))
                status, payload = endpoint.answer(method, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply("GET")

            def do_POST(self) -> None:
                self._reply("POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def files_stack(tmp_path: Any, auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "storage": {"dir": str(tmp_path)},
        "providers": {"files": [{"id": "files", "type": "inline::localfs", "config": {}}]},
        "auth": auth,
    }
