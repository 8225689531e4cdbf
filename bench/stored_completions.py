"""What `store: true` costs: the same chat completions through Lamina with and without storing them, in one run.

    python bench/stored_completions.py [--seconds 4]

`lamina run starter` in front of the fast fake upstream (bench/fake_upstream.py), both in their own processes;
the load comes from this process (bench/gateway.py's generator). Prints requests/s and p50 for store off and on,
streaming and not, at concurrency 1 and 16, their ratio, and the time of one `GET /v1/chat/completions` page
with everything the run stored.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request

import gateway
from gateway import HERE, free_port, load, start, stop, wait_healthy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    upstream_port, port = free_port(), free_port()
    upstream = start([sys.executable, str(HERE / "fake_upstream.py"), str(upstream_port)])
    with tempfile.TemporaryDirectory() as home:
        lamina = start(
            [sys.executable, "-c", "from lamina.cli import main; main()", "run", "starter", "--port", str(port)],
            {"OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1", "LAMINA_HOME": home},
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}/v1/health")
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            print("| stream | concurrency | store off req/s | store on req/s | ratio | p50 off ms | p50 on ms |")
            print("|---|---|---|---|---|---|---|")
            for stream in (False, True):
                for concurrency in (1, 16):
                    gateway.BODY = {**gateway.BODY, "model": "openai/bench", "store": False}
                    off = asyncio.run(load(url, concurrency, stream, args.seconds))
                    gateway.BODY = {**gateway.BODY, "store": True}
                    on = asyncio.run(load(url, concurrency, stream, args.seconds))
                    assert not off["failures"] and not on["failures"], (off, on)
                    print(
                        f"| {'yes' if stream else 'no'} | {concurrency} | {off['rps']:,.0f} | {on['rps']:,.0f} | "
                        f"{on['rps'] / off['rps']:.2f} | {off['p50']:.2f} | {on['p50']:.2f} |"
                    )
            timings = []
            for _ in range(5):
                began = time.perf_counter()
                with urllib.request.urlopen(f"{url}?limit=20&order=desc", timeout=60) as response:
                    page = response.read()
                timings.append(time.perf_counter() - began)
            stored = len(page)  # only to keep the read; the count comes from the run above
            print(
                f"list one page of the stored completions: p50 {statistics.median(timings) * 1000:.1f} ms ({stored} B)"
            )
        finally:
            stop(lamina)
            stop(upstream)


if __name__ == "__main__":
    main()
