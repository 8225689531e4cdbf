"""Real MCP servers for the tests, made with the `mcp` package's FastMCP and served by uvicorn in a thread on a free
127.0.0.1 port. Each records the tool calls and tool listings it answered and the headers of every HTTP request."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import uvicorn
from fake_openai import free_port
from mcp.server.fastmcp import FastMCP
from starlette.types import ASGIApp, Receive, Scope, Send


class RecordingMCP(FastMCP):  # type: ignore[misc]
    """FastMCP that counts the tool listings it answers (to see the client's cache at work)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listings = 0

    async def list_tools(self) -> Any:
        self.listings += 1
        return await super().list_tools()


class McpServer:
    """`with McpServer("streamable_http") as server:` — `server.url`, `server.calls`, `server.headers`."""

    def __init__(self, transport: str, name: str = "demo") -> None:
        self.transport = transport
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self.mcp = mcp = RecordingMCP(name, instructions=f"the {name} test server")

        if transport == "sse":

            @mcp.tool(description="Reverse a text")
            def reverse(text: str) -> str:
                self.calls.append(("reverse", {"text": text}))
                return text[::-1]

            @mcp.tool(description="Fail on purpose")
            def explode(reason: str) -> str:
                self.calls.append(("explode", {"reason": reason}))
                raise ValueError(f"exploded: {reason}")

        else:

            @mcp.tool(description="Add two integers")
            def add(a: int, b: int) -> int:
                self.calls.append(("add", {"a": a, "b": b}))
                return a + b

            @mcp.tool(description="Sleep, then answer")
            async def slow(seconds: float) -> str:
                self.calls.append(("slow", {"seconds": seconds}))
                await asyncio.sleep(seconds)
                return "done"

    def _recording(self, app: ASGIApp) -> ASGIApp:
        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.headers.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
            await app(scope, receive, send)

        return recorded

    def __enter__(self) -> McpServer:
        port = free_port()
        app = self.mcp.sse_app() if self.transport == "sse" else self.mcp.streamable_http_app()
        path = "/sse" if self.transport == "sse" else "/mcp"
        self.url = f"http://127.0.0.1:{port}{path}"
        config = uvicorn.Config(self._recording(app), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"mcp-{self.transport}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
