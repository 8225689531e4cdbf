"""Record and replay a provider's upstream exchanges, for tests that run in CI with no upstream.

    with Recorder(Path(__file__).parent / "recordings" / "test_chat.json", upstream="https://api.anthropic.com") as rec:
        config = {"base_url": rec.url, "api_key": os.environ.get("ANTHROPIC_API_KEY", "unused")}
        ...  # serve a stack with that provider config and talk to it

`Recorder` is a small HTTP server on 127.0.0.1 that the provider under test talks to instead of its upstream. Its
mode comes from `LAMINA_RECORDING` (or `mode=`):

- `replay` (the default): answers each request with the recorded answer to the same normalised request; nothing
  else runs. A request with no recording, or whose recording no longer matches (a stale one), is answered 500 and
  makes the `with` block raise `RecordingError`, saying what differs and how to re-record.
- `record`: forwards each request to `upstream` and writes the exchanges, in order, to the file on exit.
- `live`: forwards each request to `upstream` and writes nothing.

A recording is a readable JSON file: each exchange's normalised request (method, path, query, the headers named in
`match_headers`, the JSON body without the fields named in `ignore`) and the answer (status, content type, and
the JSON body, or a stream's server-sent events one string each). Request headers other than `match_headers` are
never written, so API keys stay out of recordings.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

Mode = Literal["replay", "record", "live"]
MODES: tuple[Mode, ...] = ("replay", "record", "live")
HOP_HEADERS = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding", "keep-alive"}


class RecordingError(AssertionError):
    """A request had no recording, or a stale one, in replay mode."""


class Recorder:
    def __init__(
        self,
        path: Path | str,
        *,
        upstream: str | None = None,
        mode: Mode | None = None,
        match_headers: tuple[str, ...] = (),
        ignore: tuple[str, ...] = (),
    ) -> None:
        chosen = mode or os.environ.get("LAMINA_RECORDING", "replay")
        if chosen not in MODES:
            raise ValueError(f"LAMINA_RECORDING={chosen!r}: choose one of {', '.join(MODES)}")
        self.mode: Mode = chosen
        self.path = Path(path)
        self.upstream = upstream.rstrip("/") if upstream else None
        if self.mode != "replay" and not self.upstream:
            raise ValueError(f"LAMINA_RECORDING={self.mode} needs the upstream's URL to forward requests to")
        self.match_headers = tuple(h.lower() for h in match_headers)
        self.ignore = ignore
        self.exchanges: list[dict[str, Any]] = []  # recorded in this run (record mode)
        self.recorded: list[dict[str, Any]] = []  # read from the file (replay mode)
        self.used: set[int] = set()
        self.problems: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        """Where the provider under test should send its requests (the upstream's root, as `upstream` is)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Recorder:
        if self.mode == "replay" and self.path.exists():
            self.recorded = json.loads(self.path.read_text())["exchanges"]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="lamina-recorder", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
        if self.problems:
            raise RecordingError("\n".join(self.problems))
        if self.mode == "record" and exc_info[0] is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"exchanges": self.exchanges}, indent=2, ensure_ascii=False, sort_keys=True)
            self.path.write_text(text + "\n")

    # Requests

    def normalise(self, method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        split = urlsplit(target)
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode(errors="replace")
        for dotted in self.ignore:
            _drop(parsed, dotted.split("."))
        return {
            "method": method,
            "path": split.path,
            "query": dict(sorted(parse_qsl(split.query))),
            "headers": {name: headers[name] for name in self.match_headers if name in headers},
            "body": parsed,
        }

    def replay(self, request: dict[str, Any]) -> dict[str, Any] | None:
        with self.lock:
            for index, exchange in enumerate(self.recorded):
                if index not in self.used and exchange["request"] == request:
                    self.used.add(index)
                    response: dict[str, Any] = exchange["response"]
                    return response
            self.problems.append(self._explain(request))
            return None

    def _explain(self, request: dict[str, Any]) -> str:
        how = (
            f"re-record it: LAMINA_RECORDING=record pytest <this test> (with the upstream reachable), "
            f"which rewrites {self.path}"
        )
        where = f"{request['method']} {request['path']}"
        if not self.path.exists():
            return f"no recording {self.path} for {where}; {how}"
        similar = [
            e["request"]
            for i, e in enumerate(self.recorded)
            if i not in self.used
            and (e["request"]["method"], e["request"]["path"]) == (request["method"], request["path"])
        ]
        if not similar:
            return f"stale recording {self.path}: it has no (further) exchange for {where}; {how}"
        differences = _differences(similar[0], request)
        return f"stale recording {self.path}: {where} differs from the recorded request ({'; '.join(differences[:5])}); {how}"

    def forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        assert self.upstream is not None
        sent = {name: value for name, value in headers.items() if name.lower() not in HOP_HEADERS}
        request = urllib.request.Request(self.upstream + target, data=body or None, headers=sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=600) as answer:
                status, content_type, raw = answer.status, answer.headers.get("content-type", ""), answer.read()
        except urllib.error.HTTPError as error:
            status, content_type, raw = error.code, error.headers.get("content-type", ""), error.read()
        response: dict[str, Any] = {"status": status, "content_type": content_type}
        text = raw.decode(errors="replace")
        if content_type.startswith("text/event-stream"):
            response["events"] = [event for event in text.replace("\r\n", "\n").split("\n\n") if event.strip()]
        elif content_type.startswith("application/json"):
            response["json"] = json.loads(text)
        else:
            response["text"] = text
        return response


def _drop(value: Any, path: list[str]) -> None:
    if not isinstance(value, dict) or not path:
        return
    if len(path) == 1:
        value.pop(path[0], None)
    else:
        _drop(value.get(path[0]), path[1:])


def _differences(recorded: Any, sent: Any, where: str = "") -> list[str]:
    if isinstance(recorded, dict) and isinstance(sent, dict):
        found = []
        for key in sorted(set(recorded) | set(sent), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in sent:
                found.append(f"{path}: recorded, not sent")
            elif key not in recorded:
                found.append(f"{path}: sent, not recorded")
            else:
                found += _differences(recorded[key], sent[key], path)
        return found
    if isinstance(recorded, list) and isinstance(sent, list) and len(recorded) == len(sent):
        return [
            d for i, (r, s) in enumerate(zip(recorded, sent, strict=True)) for d in _differences(r, s, f"{where}.{i}")
        ]
    if recorded != sent:
        return [f"{where or 'request'}: recorded {json.dumps(recorded)[:80]}, sent {json.dumps(sent)[:80]}"]
    return []


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # tests' output stays quiet
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            request = recorder.normalise(self.command, self.path, headers, body)
            if recorder.mode == "replay":
                response = recorder.replay(request)
                if response is None:
                    message = recorder.problems[-1]
                    response = {
                        "status": 500,
                        "content_type": "application/json",
                        "json": {"error": {"message": message}},
                    }
            else:
                response = recorder.forward(self.command, self.path, dict(self.headers.items()), body)
                if recorder.mode == "record":
                    with recorder.lock:
                        recorder.exchanges.append({"request": request, "response": response})
            self._answer(response)

        def _answer(self, response: dict[str, Any]) -> None:
            self.send_response(response["status"])
            self.send_header("Content-Type", response["content_type"] or "application/octet-stream")
            if "events" in response:
                self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
                for event in response["events"]:
                    self.wfile.write(event.encode() + b"\n\n")
                    self.wfile.flush()
                return
            data = json.dumps(response["json"]).encode() if "json" in response else response["text"].encode()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    return Handler
