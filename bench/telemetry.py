"""What telemetry costs the gateway: server CPU time per request, six gateways in one run.

    python bench/telemetry.py [--seconds 4] [--rounds 3] [--concurrency 8]

- `core`: the telemetry plugin left out (LAMINA_DISABLE_PLUGINS=lamina-telemetry)
- `core2`: another such gateway, the control: how far two identical processes differ (memory layout)
- `off`: the plugin installed, `telemetry: {enabled: false}`
- `metrics`: the plugin as installed, no OTLP endpoint: Prometheus metrics only
- `traces`: tracing at 100% sampling exported over OTLP/HTTP to a sink process, metrics off
- `on`: tracing at 100% sampling exported over OTLP/HTTP to a sink process, and metrics on (/metrics and OTLP)

All (six) run side by side against one fast fake upstream (bench/fake_upstream.py); load goes to one at a time,
in interleaved rounds, and each gateway's CPU time (user + system, from /proc) is divided by the requests it
served. Ratios are against `core`. Other load on the machine shifts wall time more than CPU time, but on a
busy shared machine a gateway's CPU per request still moves by ±20% from round to round: see --instructions.
`--baseline TREE` adds `off@base`, `metrics@base`, `traces@base` and `on@base`: the same with TREE's plugin and core
(e.g. `git archive main` unpacked) first on PYTHONPATH, so that a change is measured against its baseline in one
run. `--variants on,on@base` runs only those (and `core`).

    python bench/telemetry.py --instructions 512 [--baseline TREE]

The same gateways under valgrind (callgrind, switched on only while measuring): instructions per request over 512
requests at concurrency 8, all of a gateway's threads (the span exporter's encoding and posting included). A count,
not a time, so the same on a loaded machine as on a quiet one; it misses what instructions do not show (cache
misses, lock waits). Slow: start-up takes minutes. `GC/req` is the garbage collections' share of each count: a
collection of the whole heap lands in some windows and not others and moves a count by several points.

    python bench/telemetry.py --breakdown

Where tracing's CPU goes, in this process and without HTTP (thread CPU time, so steadier on a loaded machine):
what one non-streaming chat completion costs in the event loop (the server, router, provider and HTTP client
spans made as the gateway makes them, the request's metrics), and per span in the export thread (encoding).

    python bench/telemetry.py --client

The HTTP client span on a real aiohttp request, in this process against the fake upstream (thread CPU time per
request, each inside a parent span as in the gateway): a bare `session.request`; one sending a per-request
header (aiohttp's part of sending a `traceparent`); one inside `observe.outbound` with the plugin's tracer, as
remote::openai sends; and a bare one on a session given an empty `aiohttp.TraceConfig` (what tracing through
aiohttp's own hooks cost before any callback ran).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from gateway import BODY, cpu_seconds, free_port, load, start, stop, wait_healthy

HERE = Path(__file__).parent
LAMINA = [sys.executable, "-c", "from lamina.cli import main; main()", "run"]
CALLGRIND = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]


def sink(port: int) -> None:
    """An OTLP/HTTP endpoint that accepts and drops everything (a collector's cost is not the gateway's)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # connections kept alive, as a collector keeps them

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def breakdown(requests: int = 5000) -> None:
    """The per-request telemetry work of a chat completion, replayed through the plugin's own objects."""
    import os
    from types import SimpleNamespace

    from lamina import observe
    from lamina_telemetry import TelemetryConfig
    from lamina_telemetry.telemetry import Telemetry

    os.environ.update(OTEL_BSP_MAX_QUEUE_SIZE=str(10 * requests), OTEL_BSP_SCHEDULE_DELAY="100000000")
    os.environ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = str(10 * requests)  # nothing leaves: the spans are encoded below
    answer = {
        "id": "chatcmpl-1", "model": "bench", "usage": {"prompt_tokens": 5, "completion_tokens": 5},
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
    }  # fmt: skip
    request = SimpleNamespace(
        model="bench", stream=False, max_tokens=50, max_completion_tokens=None, temperature=None, top_p=None, seed=None
    )
    scope = {
        "type": "http", "method": "POST", "path": "/v1/chat/completions",
        "headers": [(b"host", b"gateway"), (b"content-type", b"application/json"), (b"content-length", b"100")],
    }  # fmt: skip

    def replay(traces: bool, metrics: bool) -> tuple[float, Any]:
        endpoint = "http://127.0.0.1:9/v1/traces" if traces else None
        telemetry = Telemetry(TelemetryConfig(metrics=metrics, sampling_ratio=1.0), endpoint, None)

        class Provider:
            async def chat_completion(self, _: Any) -> dict[str, Any]:
                headers: dict[str, str] = {}  # what remote::openai does around its upstream request
                with observe.outbound("POST", "http://127.0.0.1:8000/v1/chat/completions", headers) as answered:
                    answered(200)
                return answer

        spec = SimpleNamespace(api="inference", type="remote::openai")
        provider = telemetry.wrap_provider(Provider(), "openai", spec)  # type: ignore[arg-type]

        async def routes(scope: Any, receive: Any, send: Any) -> None:
            info = observe.begin_request("POST", "/v1/chat/completions", None)
            with observe.span("router POST /v1/chat/completions"):
                await provider.chat_completion(request)
            info.status, info.route, info.provider = 200, "/v1/chat/completions", "openai"

        app = telemetry.asgi_wrapper(routes)

        async def serve_all() -> None:
            for _ in range(requests):  # each request its own task, as under hypercorn
                await asyncio.create_task(app(scope, None, None))  # type: ignore[arg-type]

        observe.install(telemetry)
        try:
            began = time.thread_time()
            asyncio.run(serve_all())
            return (time.thread_time() - began) / requests * 1e6, telemetry
        finally:
            observe.install(None)

    def bare() -> float:
        async def routes() -> None:
            observe.begin_request("POST", "/v1/chat/completions", None)

        async def serve_all() -> None:
            for _ in range(requests):
                await asyncio.create_task(routes())

        began = time.thread_time()
        asyncio.run(serve_all())
        return (time.thread_time() - began) / requests * 1e6

    rows: dict[str, list[float]] = {}
    for _ in range(3):
        rows.setdefault("bare", []).append(bare())
        for name, traces, metrics in (("metrics", False, True), ("traces", True, False), ("both", True, True)):
            cost, telemetry = replay(traces, metrics)
            rows.setdefault(name, []).append(cost)
            if traces:
                recorder = telemetry.spans
                spans = list(recorder.queue)
                began = time.thread_time()
                for start in range(0, len(spans), 512):
                    recorder.encode(spans[start : start + 512])
                per_span = (time.thread_time() - began) / len(spans) * 1e6
                rows.setdefault(f"{name}: encode per span", []).append(per_span)
                rows.setdefault(f"{name}: spans per request", []).append(len(spans) / requests)
                recorder.queue.clear()
                recorder.shutdown()
    base = statistics.median(rows.pop("bare"))
    print(f"in-process, {requests} requests, median of 3; event loop µs per request over a bare task:")
    for name, values in rows.items():
        median = statistics.median(values)
        print(f"  {name:<28}{median if 'per' in name else median - base:>8.1f}")


def client(requests: int = 2000, rounds: int = 7) -> None:
    """µs of event-loop CPU per upstream request: bare, through `observe.outbound`, on a traced aiohttp session."""
    import os

    from lamina import observe
    from lamina_telemetry import TelemetryConfig
    from lamina_telemetry.telemetry import Telemetry

    os.environ.update(OTEL_BSP_MAX_QUEUE_SIZE=str(10 * requests), OTEL_BSP_SCHEDULE_DELAY="100000000")
    os.environ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = str(10 * requests)  # the export thread stays idle
    port = free_port()
    upstream = start([sys.executable, str(HERE / "fake_upstream.py"), str(port)])
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = b'{"model": "bench", "messages": [{"role": "user", "content": "hi"}]}'
    traceparent = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    telemetry = Telemetry(TelemetryConfig(metrics=False, sampling_ratio=1.0), "http://127.0.0.1:9/v1/traces", None)
    assert telemetry.spans is not None

    async def run(variant: str) -> float:
        trace_configs = [aiohttp.TraceConfig()] if variant == "aiohttp TraceConfig (empty)" else None
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=connector, trace_configs=trace_configs) as session:

            async def one() -> None:
                with observe.span("chat bench"):  # the gateway's client span always has a parent
                    if variant == "observe.outbound":
                        headers: dict[str, str] = {}
                        with observe.outbound("POST", url, headers) as answered:
                            response = await session.request("POST", url, data=body, headers=headers or None)
                            answered(response.status)
                    elif variant == "a per-request header":
                        response = await session.request("POST", url, data=body, headers=traceparent)
                    else:
                        response = await session.request("POST", url, data=body)
                    async with response:
                        await response.read()

            await asyncio.gather(*(one() for _ in range(8)))  # connections opened
            began = time.thread_time()
            for _ in range(requests // 8):
                await asyncio.gather(*(one() for _ in range(8)))
            return (time.thread_time() - began) / (requests // 8 * 8) * 1e6

    rows: dict[str, list[float]] = {}
    observe.install(telemetry)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/v1/models")
        for _ in range(rounds):
            for variant in ("bare", "a per-request header", "observe.outbound", "aiohttp TraceConfig (empty)"):
                rows.setdefault(variant, []).append(asyncio.run(run(variant)))
                telemetry.spans.queue.clear()
    finally:
        observe.install(None)
        telemetry.spans.shutdown()
        stop(upstream)
    bare = rows["bare"]
    print(f"in-process aiohttp client, {requests} requests at concurrency 8, median of {rounds} (paired by round):")
    for variant, values in rows.items():
        extra = statistics.median(v - b for v, b in zip(values, bare, strict=True))
        print(f"  {variant:<30}{statistics.median(values):>8.1f} µs/request{extra:>+8.1f}")


def measure_together(
    gateways: dict[str, tuple[int, str]],
    args: argparse.Namespace,
    stream: bool,
    per_request: dict[tuple[str, bool], list[float]],
) -> None:
    """One round with every gateway under load at once: each one's CPU per request is then measured under the
    same machine conditions, which a shared machine's load changes from second to second otherwise."""

    async def all_at_once() -> list[dict[str, float]]:
        urls = [url + "/chat/completions" for _, url in gateways.values()]
        return await asyncio.gather(*(load(url, args.concurrency, stream, args.seconds) for url in urls))

    before = {name: cpu_seconds(pid) for name, (pid, _) in gateways.items()}
    results = asyncio.run(all_at_once())
    for (name, (pid, _)), result in zip(gateways.items(), results, strict=True):
        assert not result["failures"], result
        per_request.setdefault((name, stream), []).append((cpu_seconds(pid) - before[name]) * 1e6 / result["n"])


def count_instructions(gateways: dict[str, tuple[int, str]], home: Path, requests: int) -> None:
    """Instructions per request (valgrind's count, every thread of the gateway): unlike CPU time, the same however
    loaded the machine is, so a few percent show. Instrumentation is switched on for the measured requests only."""
    import subprocess

    async def fixed(url: str, stream: bool) -> None:
        body = {**BODY, "stream": stream}
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                for _ in range(requests // 8):
                    async with session.post(url, json=body) as response:
                        await response.read()
                        assert response.status == 200, response.status

            await asyncio.gather(*(worker() for _ in range(8)))

    counts: dict[tuple[str, bool], float] = {}
    in_gc: dict[tuple[str, bool], float] = {}
    for stream in (False, True):
        for name, (pid, url) in gateways.items():
            url += "/chat/completions"
            asyncio.run(load(url, 8, stream, 3.0))  # connections, caches, label sets
            subprocess.run(["callgrind_control", "--instr=on", str(pid)], check=True, capture_output=True)
            asyncio.run(fixed(url, stream))  # instrumented code paths warmed
            # Under valgrind a batch takes seconds to encode: the warm-up's last one is done before counting starts,
            # and the measured requests' last one before the count is taken (else one batch more or less is in it).
            time.sleep(15)
            subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
            asyncio.run(fixed(url, stream))  # 4 spans a request: requests / 128 full batches exported
            time.sleep(15)
            subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "--instr=off", str(pid)], check=True, capture_output=True)
            dumps = sorted(home.glob(f"{name}.callgrind*"), key=lambda path: path.stat().st_mtime)
            totals = [line for line in dumps[-1].read_text().splitlines() if line.startswith(("summary:", "totals:"))]
            counts[(name, stream)] = int(totals[0].split()[1]) / (requests // 8 * 8)
            in_gc[(name, stream)] = gc_instructions(dumps[-1]) / (requests // 8 * 8)
    print(f"gateway instructions per request (valgrind), {requests} requests at concurrency 8")
    # GC/req: what the garbage collections allocations triggered in the window cost. A full collection of the heap
    # (~150k a request at 256 requests) lands in some windows and not others: compare counts with that in view.
    print(f"{'variant':<12}{'stream':<8}{'Ir/req':>12}{'vs core':>9}{'GC/req':>10}")
    for stream in (False, True):
        for name in gateways:
            count = counts[(name, stream)]
            print(
                f"{name:<12}{stream!s:<8}{count:>12,.0f}{count / counts[('core', stream)] - 1:>+9.1%}"
                f"{in_gc[(name, stream)]:>10,.0f}"
            )


def gc_instructions(dump: Path) -> float:
    """Instructions in garbage collection in a callgrind dump: the inclusive cost of `_PyObject_GC_Link`, where an
    allocation starts a collection (0 if the interpreter's symbols are not there)."""
    import subprocess

    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", str(dump)], check=True, capture_output=True, text=True
    ).stdout
    for line in annotated.splitlines():
        if line.rstrip().endswith("]") and ":_PyObject_GC_Link " in line:
            return float(line.split()[0].replace(",", ""))
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--together", action="store_true", help="load every gateway at once in each round")
    parser.add_argument("--breakdown", action="store_true", help="where tracing's CPU goes, in-process")
    parser.add_argument("--client", action="store_true", help="the HTTP client span on real aiohttp requests")
    parser.add_argument("--instructions", type=int, metavar="N", help="count instructions over N requests (valgrind)")
    parser.add_argument("--baseline", metavar="TREE", help="also run the plugin's variants with this tree's code")
    parser.add_argument("--variants", help="only these variants, comma-separated (core is always run)")
    args = parser.parse_args()
    if args.instructions is not None and (args.instructions <= 0 or args.instructions % 128):
        parser.error("--instructions: a multiple of 128 (4 spans a request: each 128 requests fill one batch)")
    if args.sink:
        sink(args.sink)
        return
    if args.breakdown:
        breakdown()
        return
    if args.client:
        client()
        return

    up_port, sink_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    processes = [start([sys.executable, str(HERE / "fake_upstream.py"), str(up_port)])]
    processes.append(start([sys.executable, __file__, "--sink", str(sink_port)]))
    home = Path(tempfile.mkdtemp())
    # Under valgrind a gateway serves ~10 requests/s: a timer's export (metrics every 5 s, a partial span batch)
    # would weigh a hundred times what it does on a busy gateway, so only full span batches are sent.
    interval = 3600 if args.instructions else 5
    variants = {
        "core": ({}, {"LAMINA_DISABLE_PLUGINS": "lamina-telemetry"}),
        "core2": ({}, {"LAMINA_DISABLE_PLUGINS": "lamina-telemetry"}),
        "off": ({"enabled": False}, {}),
        "metrics": ({}, {}),  # the default once installed: /metrics, no export
        "traces": ({"otlp_endpoint": f"http://127.0.0.1:{sink_port}", "sampling_ratio": 1.0, "metrics": False}, {}),
        "on": (
            {
                "otlp_endpoint": f"http://127.0.0.1:{sink_port}",
                "sampling_ratio": 1.0,
                "export_interval_seconds": interval,
            },
            {},
        ),
    }
    if args.baseline:  # another version's plugin and core (a checkout or `git archive`), put first on the path
        tree = Path(args.baseline).resolve()
        path = {"PYTHONPATH": f"{tree / 'plugins' / 'telemetry'}:{tree / 'core'}"}
        variants |= {f"{name}@base": (variants[name][0], path) for name in ("off", "metrics", "traces", "on")}
    if args.variants:
        wanted = {"core", *args.variants.split(",")}
        variants = {name: variant for name, variant in variants.items() if name in wanted}
    gateways: dict[str, tuple[int, str]] = {}
    try:
        wait_healthy(upstream + "/models")
        wait_healthy(f"http://127.0.0.1:{sink_port}/")
        for name, (telemetry, env) in variants.items():
            run_yaml = home / f"{name}.yaml"
            config = {
                "distro": f"bench-{name}",
                "storage": {"dir": str(home / name)},
                "providers": {
                    "inference": [
                        {
                            "id": "openai",
                            "type": "remote::openai",
                            "config": {"base_url": upstream, "models": ["bench"]},
                        }
                    ]
                },
                "telemetry": telemetry,
            }
            run_yaml.write_text(yaml.safe_dump(config))
            port = free_port()
            command = [*LAMINA, str(run_yaml), "--port", str(port)]
            if args.instructions:
                # A fixed hash seed: dict layouts, so counts, the same from run to run and process to process.
                env = {**env, "OTEL_BSP_SCHEDULE_DELAY": "3600000", "PYTHONHASHSEED": "0"}
                command = [*CALLGRIND, f"--callgrind-out-file={home / name}.callgrind", *command]
            process = start(command, {"LAMINA_HOME": str(home), **env})
            processes.append(process)
            gateways[name] = (process.pid, f"http://127.0.0.1:{port}/v1")
        for _, url in gateways.values():
            wait_healthy(url + "/health", 900 if args.instructions else 120)  # six or more starting at once
        BODY["model"] = "openai/bench"
        if args.instructions:
            count_instructions(gateways, home, args.instructions)
            return
        per_request: dict[tuple[str, bool], list[float]] = {}
        for stream in (False, True):
            for _pid, url in gateways.values():  # warm connections, caches and metric label sets
                asyncio.run(load(url + "/chat/completions", args.concurrency, stream, 1.0))
            for _ in range(args.rounds):
                if args.together:
                    measure_together(gateways, args, stream, per_request)
                    continue
                for name, (pid, url) in gateways.items():
                    before = cpu_seconds(pid)
                    result = asyncio.run(load(url + "/chat/completions", args.concurrency, stream, args.seconds))
                    used = (cpu_seconds(pid) - before) * 1e6 / result["n"]
                    assert not result["failures"], result
                    per_request.setdefault((name, stream), []).append(used)
        print(
            f"gateway CPU per request, median of {args.rounds} rounds of {args.seconds:g}s at concurrency "
            f"{args.concurrency}"
        )
        # `paired`: the median of per-round ratios, which cancels most of the machine's swings between rounds
        # (with --together each round measures every variant at once).
        print(f"{'variant':<12}{'stream':<8}{'us/req':>8}{'vs core':>9}{'paired':>9}   rounds")
        for stream in (False, True):
            core = per_request[("core", stream)]
            base = statistics.median(core)
            for name in gateways:
                rounds = per_request[(name, stream)]
                median = statistics.median(rounds)
                paired = f"{statistics.median(r / c for r, c in zip(rounds, core, strict=True)) - 1:>+9.1%}"
                shown = " ".join(f"{r:.0f}" for r in rounds)
                print(f"{name:<12}{stream!s:<8}{median:>8.0f}{median / base - 1:>+9.1%}{paired}   {shown}")
    finally:
        for process in processes:
            stop(process)


if __name__ == "__main__":
    main()
