"""What telemetry costs the gateway: server CPU time per request, three gateways in one run.

    python bench/telemetry.py [--seconds 4] [--rounds 3] [--concurrency 8]

- `core`: the telemetry plugin left out (LAMINA_DISABLE_PLUGINS=lamina-telemetry)
- `off`: the plugin installed, `telemetry: {enabled: false}`
- `metrics`: the plugin as installed, no OTLP endpoint: Prometheus metrics only
- `traces`: tracing at 100% sampling exported over OTLP/HTTP to a sink process, metrics off
- `on`: tracing at 100% sampling exported over OTLP/HTTP to a sink process, and metrics on (/metrics and OTLP)

All three run side by side against one fast fake upstream (bench/fake_upstream.py); load goes to one at a time,
in interleaved rounds, and each gateway's CPU time (user + system, from /proc) is divided by the requests it
served, so other load on the machine shifts wall time but hardly CPU time. Ratios are against `core`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from gateway import BODY, cpu_seconds, free_port, load, start, stop, wait_healthy

HERE = Path(__file__).parent
LAMINA = [sys.executable, "-c", "from lamina.cli import main; main()", "run"]


def sink(port: int) -> None:
    """An OTLP/HTTP endpoint that accepts and drops everything (a collector's cost is not the gateway's)."""

    class Handler(BaseHTTPRequestHandler):
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink)
        return

    up_port, sink_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    processes = [start([sys.executable, str(HERE / "fake_upstream.py"), str(up_port)])]
    processes.append(start([sys.executable, __file__, "--sink", str(sink_port)]))
    home = Path(tempfile.mkdtemp())
    variants = {
        "core": ({}, {"LAMINA_DISABLE_PLUGINS": "lamina-telemetry"}),
        "off": ({"enabled": False}, {}),
        "metrics": ({}, {}),  # the default once installed: /metrics, no export
        "traces": ({"otlp_endpoint": f"http://127.0.0.1:{sink_port}", "sampling_ratio": 1.0, "metrics": False}, {}),
        "on": (
            {"otlp_endpoint": f"http://127.0.0.1:{sink_port}", "sampling_ratio": 1.0, "export_interval_seconds": 5},
            {},
        ),
    }
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
            process = start([*LAMINA, str(run_yaml), "--port", str(port)], {"LAMINA_HOME": str(home), **env})
            processes.append(process)
            gateways[name] = (process.pid, f"http://127.0.0.1:{port}/v1")
        for _, url in gateways.values():
            wait_healthy(url + "/health")
        BODY["model"] = "openai/bench"
        per_request: dict[tuple[str, bool], list[float]] = {}
        for stream in (False, True):
            for _pid, url in gateways.values():  # warm connections, caches and metric label sets
                asyncio.run(load(url + "/chat/completions", args.concurrency, stream, 1.0))
            for _ in range(args.rounds):
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
        print(f"{'variant':<8}{'stream':<8}{'us/req':>8}{'vs core':>9}   rounds")
        for stream in (False, True):
            base = statistics.median(per_request[("core", stream)])
            for name in gateways:
                rounds = per_request[(name, stream)]
                median = statistics.median(rounds)
                shown = " ".join(f"{r:.0f}" for r in rounds)
                print(f"{name:<8}{stream!s:<8}{median:>8.0f}{median / base - 1:>+9.1%}   {shown}")
    finally:
        for process in processes:
            stop(process)


if __name__ == "__main__":
    main()
