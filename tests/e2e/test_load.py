"""Sustained load: 64 concurrent clients, 20,000 requests, while /v1/health keeps answering fast.

Every part runs in a process of its own (fake upstream, `lamina run`, load generator, health prober) so the
2-core machine schedules them like separate programs; the upstream and the generator run at a lower priority,
as they would on other machines, and the prober's timings are the server's own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from fake_openai import CHAT_MODEL, free_port

CLIENTS = 64
REQUESTS = 20_000
HEALTH_EVERY = 0.05
HERE = Path(__file__).parent


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the process behind {url} exited early"
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up within 30s")


def lower_priority() -> None:
    os.nice(10)


@pytest.mark.slow
def test_sustained_load_with_fast_health(tmp_path: Path) -> None:
    upstream_port, port = free_port(), free_port()
    env = {**os.environ, "LAMINA_HOME": str(tmp_path), "LAMINA_LOG_LEVEL": "WARNING"}
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(
        yaml.safe_dump(
            {
                "distro": "load",
                "storage": {"dir": str(tmp_path / "data")},
                "providers": {
                    "inference": [
                        {
                            "id": "up",
                            "type": "remote::openai",
                            "config": {"base_url": f"http://127.0.0.1:{upstream_port}/v1"},
                        }
                    ]
                },
            }
        )
    )
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "fake_openai.py"), str(upstream_port)], env=env, preexec_fn=lower_priority
    )
    server = subprocess.Popen(
        [sys.executable, "-c", "from lamina.cli import main; main()", "run", str(run_yaml), "--port", str(port)],
        env=env,
    )
    processes = [server, upstream]
    try:
        wait_until_up(f"http://127.0.0.1:{upstream_port}/v1/models", upstream)
        wait_until_up(f"http://127.0.0.1:{port}/v1/health", server)
        prober = subprocess.Popen(
            [sys.executable, str(HERE / "health_prober.py"), str(port), str(HEALTH_EVERY)],
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(prober)
        generator = subprocess.run(
            [
                sys.executable,
                str(HERE / "load_generator.py"),
                f"http://127.0.0.1:{port}/v1/chat/completions",
                f"up/{CHAT_MODEL}",
                str(CLIENTS),
                str(REQUESTS),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=lower_priority,
            check=True,
        )
        prober.send_signal(signal.SIGTERM)
        probes = json.loads(prober.communicate(timeout=15)[0])
        load = json.loads(generator.stdout)
        latencies = sorted(probes["latencies"])
        worst = latencies[-1]
        print(
            f"\n{REQUESTS} requests (half streamed) from {CLIENTS} clients in {load['elapsed']:.1f}s: "
            f"{REQUESTS / load['elapsed']:.0f} requests/s; /v1/health over {len(latencies)} probes: "
            f"median {latencies[len(latencies) // 2] * 1000:.1f} ms, max {worst * 1000:.1f} ms"
        )
        assert load["error_count"] == 0, load["errors"]
        assert load["ok"] == REQUESTS
        assert not probes["failures"], probes["failures"][:5]
        # Behaviour only: every probe was answered (a failure is one that erred or timed out). How fast is
        # bench/gateway.py's business; a latency budget here would flake on a busy 2-core machine.
        assert latencies, "no /v1/health probe was answered during the load"
        assert server.poll() is None
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        assert server.wait(15) == 0
        upstream.wait(15)
