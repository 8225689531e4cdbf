"""Benchmark the start of `lamina run local` with its models already pulled (issue 16).

    python bench/startup.py [--models ~/.cache/lamina-test/models] [--runs 3]

Times, from spawning `lamina run` (a real subprocess on a free port) to the first healthy `/v1/health`, and to
the first chat answer (8 greedy tokens from torch/SmolLM2-135M-Instruct), the local distro's run.yaml in three
ways, each the median of `--runs` starts:
  baseline: `weight_cache: false` for inline::torch: the model is read and converted on every start (what every
            start did before the cache);
  cold:     the cache on, but empty: the first start after a pull (reads, converts, writes the cache);
  warm:     the cache filled by the cold runs: every later start.
Each variant gets a fresh LAMINA_HOME whose `models` links to the folder of pulled models (`--models`), so
nothing else carries over between variants. Prints the figures and the ratios against the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.resources import files
from pathlib import Path

import yaml

CHAT_MODEL = "torch/SmolLM2-135M-Instruct"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_config(home: Path, weight_cache: bool) -> Path:
    config = yaml.safe_load((files("lamina_distro_local") / "run.yaml").read_text())
    for provider in config["providers"]["inference"]:
        if provider["type"] == "inline::torch":
            provider["config"]["weight_cache"] = weight_cache
    path = home / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_once(config: Path, home: Path, log: Path) -> tuple[float, float]:
    """Seconds from spawn to a healthy /v1/health, and to the first chat answer."""
    port = free_port()
    env = {**os.environ, "LAMINA_HOME": str(home)}
    lamina = Path(sys.executable).with_name("lamina")
    started = time.perf_counter()
    with log.open("w") as output:
        server = subprocess.Popen(
            [str(lamina), "run", str(config), "--port", str(port)], env=env, stdout=output, stderr=output
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        healthy = None
        while healthy is None:
            if server.poll() is not None:
                raise RuntimeError(f"lamina run exited with {server.returncode}; see {log}")
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"not healthy after 600 s; see {log}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
                    if response.status == 200:
                        healthy = time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
        body = {
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8,
            "temperature": 0,
        }
        request = urllib.request.Request(
            f"{base}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            answer = json.load(response)
        assert answer["choices"][0]["message"]["content"], answer
        return healthy, time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(60)


def variant(name: str, models: Path, runs: int, weight_cache: bool, clear_cache: bool, root: Path) -> list[tuple]:
    home = root / name
    home.mkdir()
    (home / "models").symlink_to(models)
    config = run_config(home, weight_cache)
    results = []
    for run in range(runs):
        if clear_cache:
            shutil.rmtree(home / "local" / "torch" / "converted", ignore_errors=True)
        results.append(start_once(config, home, root / f"{name}-{run}.log"))
        print(
            f"  {name} run {run + 1}: healthy {results[-1][0]:.1f} s, first answer {results[-1][1]:.1f} s", flush=True
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("~/.cache/lamina-test/models").expanduser())
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lamina-startup-") as tmp:
        root = Path(tmp)
        cold_and_warm_home = root / "cache"
        baseline = variant("baseline", args.models, args.runs, False, False, root)
        cold = variant("cache", args.models, args.runs, True, True, root)
        # The warm runs reuse the cold variant's home, whose cache the last cold run filled.
        warm = []
        config = cold_and_warm_home / "run.yaml"
        for run in range(args.runs):
            warm.append(start_once(config, cold_and_warm_home, root / f"warm-{run}.log"))
            print(f"  warm run {run + 1}: healthy {warm[-1][0]:.1f} s, first answer {warm[-1][1]:.1f} s", flush=True)
        print(f"\nmedian of {args.runs}, seconds from spawning `lamina run local` (models pulled):")
        print(f"{'variant':10} {'healthy':>8} {'ratio':>6} {'1st answer':>11} {'ratio':>6}")
        base_health = statistics.median(r[0] for r in baseline)
        base_answer = statistics.median(r[1] for r in baseline)
        for name, results in (("baseline", baseline), ("cold", cold), ("warm", warm)):
            health = statistics.median(r[0] for r in results)
            answer = statistics.median(r[1] for r in results)
            print(f"{name:10} {health:8.1f} {base_health / health:5.1f}x {answer:11.1f} {base_answer / answer:5.1f}x")


if __name__ == "__main__":
    main()
