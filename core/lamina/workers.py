"""`lamina run --workers N`: N server processes serving one listening socket.

The parent binds the socket, then forks the workers (before any event loop or thread exists); each builds its own
stack over the shared storage and accepts connections from the same socket, so the kernel spreads connections
over them. The parent only supervises: SIGTERM/SIGINT stop every worker gracefully (SIGKILL after
`STOP_GRACE_SECONDS`); a worker that dies after it started is replaced; one that fails to start stops them all.

Hypercorn's own workers import the app by module path in freshly spawned processes; ours is built from a run
config and a plugin manager, and the port must be bound (and reported) before any stack starts, hence this.

The workers share what several `lamina run` processes share: the storage (SQLite's locking and hnswlib's
per-store versions keep several processes on one data folder consistent; PostgreSQL across machines) and, with
`redis.url`, rate limits, cancellations and model lists. Without Redis, each worker counts rate limits alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from lamina.config import ConfigError, RunConfig

log = logging.getLogger("lamina")
STOP_GRACE_SECONDS = 30.0  # a worker's open requests and stack closing, after SIGTERM, before it is killed
RESTART_PAUSE_SECONDS = 1.0  # between a worker dying and its replacement starting


def check_workers(config: RunConfig, workers: int) -> None:
    """Refuse what cannot run N workers; warn about what they would not share."""
    if workers < 2:
        return
    if sys.platform == "win32":
        raise ConfigError("--workers needs fork(), which Windows lacks; run several `lamina run` processes instead")
    quotas = config.auth.quotas
    if config.auth.providers and not quotas.redis_url and (quotas.default.any() or quotas.users or quotas.teams):
        log.warning(
            "--workers %d without redis.url: each worker counts rate limits and budgets on its own, so callers get "
            "up to %d times their limits; set redis.url (or REDIS_URL in the postgres distro)",
            workers,
            workers,
        )


def run_workers(
    config: RunConfig,
    workers: int,
    serve_one: Callable[[socket.socket, Callable[[int], None]], Coroutine[Any, Any, None]],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    """Serve with `workers` processes, each running `serve_one(listener, ready)`; the exit status."""
    from lamina.server import bind

    listener = bind(config)
    listener.listen(1024)
    port = listener.getsockname()[1]
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    children: dict[int, int] = {}  # pid -> worker number
    ready_pipes: dict[int, int] = {}  # read end -> worker number, until that worker says it is ready
    started_once: set[int] = set()

    def start(number: int) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            for fd in (read_end, *ready_pipes):
                os.close(fd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os._exit(_worker(number, listener, write_end, serve_one, loop_factory))
        os.close(write_end)
        children[pid] = number
        ready_pipes[read_end] = number

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for number in range(1, workers + 1):
            start(number)
        announced = False
        while children and not stopping:
            readable: list[int] = []
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select(list(ready_pipes), [], [], 0.2)
            for fd in readable:
                number = ready_pipes.pop(fd)
                said = os.read(fd, 1)
                os.close(fd)
                if said:
                    started_once.add(number)
            if not announced and len(started_once) == workers:
                announced = True
                log.info(
                    "%d workers serving http://%s:%d/v1 (pids %s)",
                    workers,
                    config.server.host,
                    port,
                    ", ".join(str(pid) for pid in children),
                )
            pid, code = _reap()
            if pid == 0:
                continue
            number = children.pop(pid)
            if stopping:
                break
            if number not in started_once:
                log.error("worker %d failed to start (%s); stopping the others", number, _describe(code))
                status = 1
                break
            log.warning("worker %d (pid %d) %s; starting another", number, pid, _describe(code))
            time.sleep(RESTART_PAUSE_SECONDS)
            started_once.discard(number)
            start(number)
            announced = False  # said again, with the new pid, once the replacement is up
    finally:
        _stop_all(children)
        for fd in ready_pipes:
            os.close(fd)
        listener.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("all workers stopped")
    return status


def _worker(
    number: int,
    listener: socket.socket,
    ready_fd: int,
    serve_one: Callable[[socket.socket, Callable[[int], None]], Coroutine[Any, Any, None]],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> int:
    label_logs(number)

    def ready(port: int) -> None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"1")
            os.close(ready_fd)

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve_one(listener, ready))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        log.error("worker %d: %s", number, exc)
        return 1
    finally:
        logging.shutdown()
    return 0


class _WorkerLabel(logging.Filter):
    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.number
        return True


def label_logs(number: int) -> None:
    """Every log line of this process names its worker (`worker` in JSON lines, `[worker N]` in text)."""
    from lamina.requestlog import JsonFormatter

    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerLabel(number))
        formatter = handler.formatter
        if formatter is not None and not isinstance(formatter, JsonFormatter) and formatter._fmt:
            handler.setFormatter(
                logging.Formatter(formatter._fmt.replace("%(name)s", "[worker %(worker)s] %(name)s"), formatter.datefmt)
            )


def _reap() -> tuple[int, int]:
    try:
        return os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return 0, 0


def _describe(code: int) -> str:
    if os.WIFSIGNALED(code):
        return f"was killed by {signal.Signals(os.WTERMSIG(code)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(code)}"


def _stop_all(children: dict[int, int]) -> None:
    """SIGTERM every worker, wait for them to finish what they serve, SIGKILL what is left."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while children and time.monotonic() < deadline:
        pid, _ = _reap()
        if pid:
            children.pop(pid, None)
        else:
            time.sleep(0.05)
    for pid in children:
        log.warning("worker pid %d did not stop within %.0f s; killing it", pid, STOP_GRACE_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    children.clear()
