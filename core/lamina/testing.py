"""Helpers for tests of Lamina and its plugins: a real server on a free loopback port, in a thread.

with serve({"providers": {...}}) as base_url:      # or `async with`; base_url ends in /v1
    OpenAI(base_url=base_url, api_key="unused").models.list()

with serve_app(app) as upstream:                    # a fake upstream: any aiohttp web.Application
    url = f"http://127.0.0.1:{upstream.port}/v1"
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from lamina.config import RunConfig, load, resolve
from lamina.plugins import make_plugin_manager

if TYPE_CHECKING:
    from aiohttp import web  # type: ignore[import-not-found,unused-ignore]


class serve:
    """Serve `config` over HTTP on 127.0.0.1 and a free port, for the length of a `with` block.

    `config` is a distro name (as `lamina run` takes), a path to a run.yaml, a dict or a RunConfig. Storage goes to
    a temporary folder removed on exit, unless the config sets `storage.dir`. `pm` is the plugin manager to build
    the stack from (default: `make_plugin_manager()`, every installed plugin); to test a plugin that is not
    installed, make one and `pm.register(module)` it.
    """

    def __init__(
        self,
        config: RunConfig | dict[str, Any] | str | Path,
        *,
        pm: pluggy.PluginManager | None = None,
        timeout: float = 120,
    ) -> None:
        self.config = config
        self.pm = pm
        self.timeout = timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> str:
        pm = self.pm = self.pm or make_plugin_manager()
        config = self.config
        if isinstance(config, dict):
            config = resolve(config, "<test config>")
        elif isinstance(config, Path):
            config = load(config)
        elif isinstance(config, str):
            from lamina.cli import find_run_config

            config = load(find_run_config(config, pm))
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
                await serve_forever(config, pm=pm, ready=ready, shutdown=self._shutdown)

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
            if self._tmp is not None:  # `with` calls no __exit__ when __enter__ raises
                self._tmp.cleanup()
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


class serve_app:
    """Serve an aiohttp `web.Application` on 127.0.0.1 in a thread with its own event loop, for the length of a
    `with` block: the way tests fake an upstream at the network edge. `port` 0 takes a free one; `.port` tells
    which. On exit, handlers still running (a scripted hang, say) are cancelled so the thread ends promptly."""

    def __init__(self, app: web.Application, *, port: int = 0, name: str = "fake-upstream") -> None:
        self.app, self.port, self.name = app, port, name

    def __enter__(self) -> serve_app:
        try:  # a test dependency, not core's: lamina-stack[testing]
            from aiohttp import web  # type: ignore[import-not-found,unused-ignore]
        except ImportError as missing:
            raise ImportError(f"serve_app needs aiohttp: pip install 'lamina-stack[testing]' ({missing})") from None

        started = threading.Event()
        self._failure: BaseException | None = None

        def run() -> None:
            self.loop = loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
            try:
                loop.run_until_complete(self._runner.setup())
                loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
                self.port = self._runner.addresses[0][1]
            except BaseException as exc:  # reported to the test on enter
                self._failure = exc
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise TimeoutError(f"{self.name} did not start within 10s")
        if self._failure is not None:
            raise self._failure
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
