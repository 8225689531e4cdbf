"""Helpers for tests of Lamina and its plugins: a real server on a free loopback port, in a thread.

with serve({"providers": {...}}) as base_url:      # or `async with`; base_url ends in /v1
    OpenAI(base_url=base_url, api_key="unused").models.list()
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

from lamina.config import RunConfig, load, resolve


class serve:
    def __init__(self, config: RunConfig | dict[str, Any] | str | Path, *, timeout: float = 120) -> None:
        self.config = config
        self.timeout = timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> str:
        config = self.config
        if isinstance(config, dict):
            config = resolve(config, "<test config>")
        elif not isinstance(config, RunConfig):
            config = load(config)
        if config.storage.dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lamina-test-")
            config.storage.dir = self._tmp.name
        config.server.host, config.server.port = "127.0.0.1", 0
        started = threading.Event()
        self._failure: BaseException | None = None
        self._port = 0

        def ready(port: int) -> None:
            self._port = port
            started.set()

        def run() -> None:
            from lamina.server import serve as serve_forever

            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._shutdown = asyncio.Event()
                await serve_forever(config, ready=ready, shutdown=self._shutdown)

            try:
                asyncio.run(main())
            except BaseException as exc:  # reported to the test on enter
                self._failure = exc
            finally:
                started.set()

        self._thread = threading.Thread(target=run, name="lamina-test-server", daemon=True)
        self._thread.start()
        if not started.wait(self.timeout):
            raise TimeoutError(f"the server did not start within {self.timeout}s")
        if self._failure is not None:
            raise self._failure
        return f"http://127.0.0.1:{self._port}/v1"

    def __exit__(self, *exc_info: object) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._shutdown.set)
            self._thread.join(30)
        if self._tmp is not None:
            self._tmp.cleanup()

    async def __aenter__(self) -> str:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.__exit__, *exc_info)
