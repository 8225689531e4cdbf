"""The request-merging queue, with a stand-in for the model (no torch needed)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from lamina_inference_sentence_transformers.batching import Batcher


class SlowUpper:
    """Work that takes a while, records the batches it saw, and fails on the item 'boom'."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()

    def __call__(self, items: list[str]) -> list[str]:
        self.release.wait(5)
        self.batches.append(items)
        if "boom" in items:
            raise ValueError("boom")
        return [item.upper() for item in items]


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


async def test_requests_arriving_during_a_batch_are_merged_into_the_next(executor):
    work = SlowUpper()
    batcher = Batcher(work, executor, max_items=100)
    first = asyncio.create_task(batcher.submit(["a"]))
    await asyncio.sleep(0.05)  # the first batch is now running, blocked in `work`
    rest = [asyncio.create_task(batcher.submit([f"b{i}", f"c{i}"])) for i in range(5)]
    await asyncio.sleep(0.05)
    work.release.set()
    assert await first == ["A"]
    assert [await task for task in rest] == [[f"B{i}", f"C{i}"] for i in range(5)]
    assert work.batches == [["a"], [item for i in range(5) for item in (f"b{i}", f"c{i}")]]
    assert batcher.calls == 2


async def test_merged_batches_are_capped(executor):
    work = SlowUpper()
    work.release.set()
    batcher = Batcher(work, executor, max_items=4)
    results = await asyncio.gather(*(batcher.submit([str(i), str(i)]) for i in range(6)))
    assert results == [[str(i), str(i)] for i in range(6)]
    assert all(len(batch) <= 4 for batch in work.batches)


async def test_a_failing_request_does_not_fail_those_merged_with_it(executor):
    work = SlowUpper()
    batcher = Batcher(work, executor, max_items=100)
    blocker = asyncio.create_task(batcher.submit(["x"]))
    await asyncio.sleep(0.05)
    good = asyncio.create_task(batcher.submit(["ok"]))
    bad = asyncio.create_task(batcher.submit(["boom"]))
    await asyncio.sleep(0.05)
    work.release.set()
    assert await blocker == ["X"]
    assert await good == ["OK"]
    with pytest.raises(ValueError, match="boom"):
        await bad


async def test_a_cancelled_request_is_skipped(executor):
    work = SlowUpper()
    batcher = Batcher(work, executor, max_items=100)
    blocker = asyncio.create_task(batcher.submit(["x"]))
    await asyncio.sleep(0.05)
    gone = asyncio.create_task(batcher.submit(["gone"]))
    kept = asyncio.create_task(batcher.submit(["kept"]))
    await asyncio.sleep(0.01)
    gone.cancel()
    work.release.set()
    assert await blocker == ["X"]
    assert await kept == ["KEPT"]
    assert ["kept"] in work.batches and not any("gone" in batch for batch in work.batches)


def test_entry_point_and_provider_modules_import_no_torch():
    # The provider module too: `create` must return before the heavy imports, which its loading thread does.
    code = (
        "import sys, lamina_inference_sentence_transformers as m; m.register_providers(); "
        "import lamina_inference_sentence_transformers.provider; "
        "heavy = {'torch', 'sentence_transformers', 'numpy', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
