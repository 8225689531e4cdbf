"""Core's SQLite storage writes small values on the event loop's thread (a second, synchronous connection that never
waits for a lock) and everything else through aiosqlite: these tests check what that must not change. A write is
durable when the call returns (a process killed right after keeps it), reads see it at once, another process's
write lock sends it to aiosqlite (where it waits) without an error, and writes land in the order they were made.
Real SQLite files; "another process" is a real one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lamina.storage.sqlite import CHECKPOINT_EVERY, DIRECT_MAX, SQLiteStorage, SQLiteStorageConfig, open_storage


async def open_sqlite(data: Path) -> SQLiteStorage:
    return await open_storage(SQLiteStorageConfig(), data)


def direct_writes(storage: SQLiteStorage) -> int:
    return storage.db.direct.total_changes


async def test_a_small_write_is_direct_and_read_back_at_once(tmp_path: Path) -> None:
    storage = await open_sqlite(tmp_path)
    try:
        before = direct_writes(storage)
        for n in range(50):
            await storage.kv.set("things/a", {"n": n})
            assert await storage.kv.get("things/a") == {"n": n}
        assert await storage.kv.delete("things/a") is True
        assert await storage.kv.get("things/a") is None
        assert direct_writes(storage) - before == 51  # every write took the direct path
        # A value too big to write on the loop goes through aiosqlite, and reads back the same.
        big = {"text": "x" * (DIRECT_MAX + 1)}
        await storage.kv.set("things/big", big)
        assert direct_writes(storage) - before == 51
        assert await storage.kv.get("things/big") == big
    finally:
        await storage.close()


def test_a_direct_write_survives_the_process_being_killed(tmp_path: Path) -> None:
    # The child writes, checks the write was direct, then kills itself: no close, no checkpoint, nothing flushed.
    child = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from pathlib import Path
        from lamina.storage.sqlite import SQLiteStorageConfig, open_storage

        async def main():
            storage = await open_storage(SQLiteStorageConfig(), Path({str(tmp_path)!r}))
            before = storage.db.direct.total_changes
            await storage.kv.set("responses/r1", {{"status": "completed"}})
            await storage.jobs.enqueue("work", "k1", {{"n": 1}})
            assert storage.db.direct.total_changes - before == 2
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    process = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert process.returncode == -9, process.stderr.decode()

    async def check() -> None:
        storage = await open_sqlite(tmp_path)
        try:
            assert await storage.kv.get("responses/r1") == {"status": "completed"}
            job = await storage.jobs.claim("work", "w", 60)
            assert job is not None and job.payload == {"n": 1}
        finally:
            await storage.close()

    asyncio.run(check())


HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")  # the database's write lock, until told to let go
db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('other/x', '1')")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
print("released", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("cancelled", [False, True], ids=["waited-for", "caller-cancelled"])
async def test_a_write_another_process_locks_out_waits_and_keeps_its_order(tmp_path: Path, cancelled: bool) -> None:
    storage = await open_sqlite(tmp_path)
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD_LOCK,
        str(tmp_path / "kvstore.db"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert await holder.stdout.readline() == b"locked\n"
        before = direct_writes(storage)
        # The first write meets the lock and waits in aiosqlite (its busy handler polls the lock).
        first = asyncio.create_task(storage.kv.set("order/k", {"v": 1}))
        await asyncio.sleep(0.3)
        assert not first.done()
        if cancelled:  # its caller gives up: the write still lands, and still before the later ones
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
        holder.stdin.write(b"go\n")
        await holder.stdin.drain()
        assert await holder.stdout.readline() == b"released\n"
        # The lock is free, but the first write has not noticed yet: the ones after it must not overtake it.
        second = asyncio.create_task(storage.kv.set("order/k", {"v": 2}))
        third = asyncio.create_task(storage.jobs.enqueue("work", "k", {"after": "v2"}))
        await asyncio.wait_for(asyncio.gather(second, third), 30)
        assert await storage.kv.get("order/k") == {"v": 2}
        assert direct_writes(storage) == before  # all three through the fallback
        assert await storage.kv.get("other/x") == 1
        # The lock gone and nothing queued: writes are direct again.
        await storage.kv.set("order/k", {"v": 3})
        assert direct_writes(storage) == before + 1
        assert await storage.kv.get("order/k") == {"v": 3}
    finally:
        if holder.returncode is None:
            holder.kill()  # it waits for a last line
        await holder.wait()
        await storage.close()


async def test_direct_writes_are_checkpointed_off_the_loop(tmp_path: Path) -> None:
    storage = await open_sqlite(tmp_path)
    try:
        empty = (tmp_path / "kvstore.db").stat().st_size
        for n in range(CHECKPOINT_EVERY + 1):
            await storage.kv.set(f"many/{n:05d}", {"pad": "x" * 1000})
        if storage.db.checkpoint is not None:  # started by the writes, run on aiosqlite's thread
            await storage.db.checkpoint
        # The rows reached the database file while the storage stayed open: the WAL does not grow for ever.
        assert (tmp_path / "kvstore.db").stat().st_size > empty + CHECKPOINT_EVERY * 1000
        assert len(await storage.kv.values("many/")) == CHECKPOINT_EVERY + 1
    finally:
        await storage.close()


async def test_two_storages_on_one_file_see_each_others_direct_writes(tmp_path: Path) -> None:
    first, second = await open_sqlite(tmp_path), await open_sqlite(tmp_path)
    try:
        for n in range(20):
            await (first if n % 2 else second).kv.set("shared/n", n)
            assert await first.kv.get("shared/n") == n
            assert await second.kv.get("shared/n") == n
    finally:
        await first.close()
        await second.close()


WRITER = """
import asyncio, sys
from pathlib import Path
from lamina.storage.sqlite import SQLiteStorageConfig, open_storage

async def main(name):
    storage = await open_storage(SQLiteStorageConfig(), Path(sys.argv[1]))
    print("ready", flush=True)
    sys.stdin.readline()
    # Many writes at once: some meet the other process's lock and wait in aiosqlite, the rest are direct.
    await asyncio.gather(*(storage.kv.set(f"{name}/{n:04d}", n) for n in range(300)))
    await asyncio.gather(*(storage.kv.set(f"{name}/{n:04d}", -n) for n in range(0, 300, 3)))
    await storage.close()

asyncio.run(main(sys.argv[2]))
"""


async def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    await (await open_sqlite(tmp_path)).close()  # the tables, before the writers race to make them
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER,
            str(tmp_path),
            name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in ("a", "b")
    ]
    for writer in writers:
        assert writer.stdout is not None and await writer.stdout.readline() == b"ready\n"
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write(b"go\n")
    results = [await asyncio.wait_for(writer.communicate(), 60) for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], results
    storage = await open_sqlite(tmp_path)
    try:
        expected = [-n if n % 3 == 0 else n for n in range(300)]
        assert await storage.kv.values("a/") == expected
        assert await storage.kv.values("b/") == expected
    finally:
        await storage.close()
