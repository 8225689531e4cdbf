"""Benchmark the start of `lamina run local` with its models already pulled (issue 16).

    python bench/startup.py [--models ~/.cache/lamina-test/models] [--runs 3] [--warm-only]

Times, from spawning `lamina run` (a real subprocess on a free port) to the first healthy `/v1/health`, to the
first chat answer (8 greedy tokens from torch/SmolLM2-135M-Instruct) and to the first embedding (MiniLM; the two
requests sent together once healthy), the local distro's run.yaml in three ways, each the median of `--runs`
starts (`--warm-only`: the last only):
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
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path

import yaml

CHAT_MODEL = "torch/SmolLM2-135M-Instruct"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


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


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def start_once(config: Path, home: Path, log: Path) -> tuple[float, float, float]:
    """Seconds from spawn to a healthy /v1/health, to the first chat answer and to the first embedding, the two
    requests sent together as soon as the server is healthy (each waits for its own provider only)."""
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

        def chat() -> float:
            body = {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 8,
                "temperature": 0,
            }
            answer = post(f"{base}/chat/completions", body)
            assert answer["choices"][0]["message"]["content"], answer
            return time.perf_counter() - started

        def embedding() -> float:
            answer = post(f"{base}/embeddings", {"model": EMBEDDING_MODEL, "input": "The capital of France"})
            assert len(answer["data"][0]["embedding"]) == 384, answer
            return time.perf_counter() - started

        with ThreadPoolExecutor(2) as pool:
            chatted, embedded = pool.submit(chat), pool.submit(embedding)
            return healthy, chatted.result(), embedded.result()
    finally:
        server.terminate()
        server.wait(60)


def show(name: str, run: int, result: tuple[float, float, float]) -> None:
    print(
        f"  {name} run {run + 1}: healthy {result[0]:.1f} s, first chat answer {result[1]:.1f} s, "
        f"first embedding {result[2]:.1f} s, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )


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
        show(name, run, results[-1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("~/.cache/lamina-test/models").expanduser())
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--warm-only", action="store_true", help="fill the cache with one untimed start, then time warm starts only"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lamina-startup-") as tmp:
        root = Path(tmp)
        cold_and_warm_home = root / "cache"
        variants = {}
        if args.warm_only:
            variant("cache", args.models, 1, True, True, root)
        else:
            variants["baseline"] = variant("baseline", args.models, args.runs, False, False, root)
            variants["cold"] = variant("cache", args.models, args.runs, True, True, root)
        # The warm runs reuse the cold variant's home, whose cache the last cold run filled.
        variants["warm"] = warm = []
        config = cold_and_warm_home / "run.yaml"
        for run in range(args.runs):
            warm.append(start_once(config, cold_and_warm_home, root / f"warm-{run}.log"))
            show("warm", run, warm[-1])
        print(f"\nmedian of {args.runs}, seconds from spawning `lamina run local` (models pulled):")
        print(f"{'variant':10} {'healthy':>8} {'1st chat':>9} {'1st embedding':>14}")
        for name, results in variants.items():
            medians = [statistics.median(r[i] for r in results) for i in range(3)]
            print(f"{name:10} {medians[0]:8.1f} {medians[1]:9.1f} {medians[2]:14.1f}")


if __name__ == "__main__":
    main()
