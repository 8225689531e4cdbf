"""What the multi-replica tests share: `lamina run` replicas as real processes, a TCP forwarder that can be cut
and restored (Postgres going away at the network edge, or a service reached from another network namespace),
and synchronous looks into a database for assertions."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import requests
import yaml

HEALTHY_WITHIN_SECONDS = 120  # a `lamina run` start on a loaded 2-core machine
STOP_WITHIN_SECONDS = 30


def unavailable(reason: str) -> None:
    """Skip for want of a service, or fail where LAMINA_REQUIRE_SERVICES says it must be there (CI)."""
    if os.environ.get("LAMINA_REQUIRE_SERVICES"):
        pytest.fail(f"{reason} (LAMINA_REQUIRE_SERVICES is set)")
    pytest.skip(reason)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _on_a_loop_of_its_own(coroutine: Any) -> Any:
    """Run a coroutine to completion in a thread: callers may be inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def fetch_value(url: str, query: str, *args: Any) -> Any:
    """A synchronous look into the database, for assertions."""

    async def go() -> Any:
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetchval(query, *args)
        finally:
            await connection.close()

    return _on_a_loop_of_its_own(go())


def fetch_rows(url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        connection = await asyncpg.connect(url)
        try:
            return [dict(row) for row in await connection.fetch(query, *args)]
        finally:
            await connection.close()

    result: list[dict[str, Any]] = _on_a_loop_of_its_own(go())
    return result


def execute(url: str, statement: str) -> None:
    async def go() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    _on_a_loop_of_its_own(go())


def tcp_url(url: str, host: str, port: int) -> str:
    """`url` (postgresql://user@host:port/db, or a Unix socket's ...@/db?host=/folder) reached at host:port."""
    scheme, _, rest = url.partition("://")
    authority, _, path = rest.partition("/")
    user = authority.rpartition("@")[0]
    database = path.partition("?")[0]
    return f"{scheme}://{user + '@' if user else ''}{host}:{port}/{database}"


def unix_socket(url: str) -> str:
    """The socket file of a PostgreSQL URL that names its folder (`?host=/folder`, port 5432 unless `port=`)."""
    query = dict(part.split("=", 1) for part in url.partition("?")[2].split("&") if "=" in part)
    return f"{query['host']}/.s.PGSQL.{query.get('port', '5432')}"


class Replica:
    """One `lamina run` process on a run config of its own (written to `folder`), its log kept in `folder`.
    `prefix` runs it under another command, e.g. `ip netns exec NAME`, which execs it (same pid)."""

    def __init__(
        self,
        name: str,
        config: dict[str, Any],
        folder: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.host = name, host
        self.port = port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        run_yaml = folder / f"{name}.yaml"
        run_yaml.write_text(yaml.safe_dump(config))
        self.log_path = folder / f"{name}.log"
        lamina = Path(sys.executable).parent / "lamina"
        command = [*prefix, str(lamina), "run", str(run_yaml), "--host", host, "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTHY_WITHIN_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/health", timeout=2).ok:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} at {self.url} never became healthy:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind, as when a machine or a container dies."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(STOP_WITHIN_SECONDS)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_WITHIN_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_WITHIN_SECONDS)
        return self.process.returncode


def start_replicas(replicas: list[Replica]) -> list[Replica]:
    """Wait until all of them answer; any that fails to start fails the test after the others are stopped."""
    try:
        for replica in replicas:
            replica.wait_healthy()
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return replicas


class Forwarder:
    """A TCP forwarder in a thread of its own, listening on `host` (port chosen at the first start, kept after)
    and relaying to `target`: (host, port), or the path of a Unix socket. `stop()` cuts it (every connection
    closed, nothing listening) and `start()` restores it on the same port: a server going away and coming back,
    at the network edge."""

    def __init__(self, target: tuple[str, int] | str, host: str = "127.0.0.1") -> None:
        self.target, self.host = target, host
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if isinstance(self.target, str):
                upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.target)
            else:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        self.writers -= {writer, upstream_writer}

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    def start(self) -> Forwarder:
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
