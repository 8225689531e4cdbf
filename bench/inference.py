"""Benchmark inline::torch against transformers on SmolLM2-135M-Instruct (GGUF), on this machine, in one run.

    python bench/inference.py [--gguf PATH] [--dtype float32] [--quantize auto] [--threads 2]

Prints: transformers single-stream decode tok/s (same dequantized weights, float32); our single-stream decode
tok/s straight from the engine and through the HTTP server; aggregate decode tok/s of 8 concurrent streams
through the HTTP server; time to first token for a 500-token prompt; and the ratios against the targets
(single >= 2x transformers, 8 streams >= 3x our single stream).

Each measured part runs in a process of its own, one after the other, so torch thread pools and allocator
state don't carry from one into the next: transformers and our engine each in a subprocess of this script;
the HTTP server as `lamina run` in a subprocess, with the OpenAI client in this process (no torch here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DEFAULT_GGUF = os.environ.get("LAMINA_TEST_SMOLLM2", "/work/models-dev/SmolLM2-135M-Instruct.Q4_1.gguf")
QUESTION = "Write a long story about a lighthouse keeper who finds a message in a bottle."
DECODE_TOKENS = 128
STREAMS = 8
METHODOLOGY = f"""\
methodology: decode-only rates; every figure greedy (temperature 0) with end-of-turn tokens biased away, so each
  run decodes exactly its token budget; the prompt (chat template + {QUESTION!r}) is not timed.
  transformers: float32 LlamaForCausalLM on our loader's dequantized weights, generate(); decode tok/s =
  {DECODE_TOKENS} / (time of {DECODE_TOKENS + 1} new tokens - time of 1 new token), best of 2 for the 1-token run.
  engine: Engine.submit() in-process, {DECODE_TOKENS + 1} tokens; rate = tokens after the first / time from the
  first to the last token (second of two runs).
  HTTP: `lamina run` in its own process, AsyncOpenAI streaming client in the bench process; single stream = the
  engine rule on the SSE arrival times of {DECODE_TOKENS} tokens; {STREAMS} streams (each its own question
  suffix) started together: sum of tokens after each stream's first / (last token of any - first token of any).
  Each part runs in its own process, one after the other."""


def chat_prompt_ids(tokenizer) -> list[int]:
    return tokenizer.encode(tokenizer.render_chat([{"role": "user", "content": QUESTION}], None))


def bench_transformers(gguf: Path, threads: int) -> float:
    """transformers' generate, greedy, on our loader's dequantized weights in float32; decode tok/s."""
    import torch
    import transformers
    from lamina_inference_torch.tokenizer import load_tokenizer
    from lamina_inference_torch.weights import load_model

    torch.set_num_threads(threads)
    loaded = load_model(gguf)
    c = loaded.config
    config = transformers.LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        rms_norm_eps=c.rms_eps,
        rope_theta=c.rope_theta,
        max_position_embeddings=c.max_position,
        tie_word_embeddings=c.tie_embeddings,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    weights = dict(loaded.weights)
    weights.setdefault("lm_head.weight", weights["model.embed_tokens.weight"])
    model.load_state_dict(weights)
    ids = torch.tensor([chat_prompt_ids(load_tokenizer(gguf, loaded.gguf_metadata))])

    def generate(tokens: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
        assert out.shape[1] == ids.shape[1] + tokens
        return time.perf_counter() - start

    generate(8)  # warm-up
    first = min(generate(1) for _ in range(2))
    total = generate(DECODE_TOKENS + 1)
    return DECODE_TOKENS / (total - first)


def bench_engine_single(gguf: Path, dtype: str, quantize: str, threads: int) -> float:
    """Our engine, no server: one greedy sequence; decode tok/s from its token timestamps."""
    from lamina_inference_torch.config import TorchConfig
    from lamina_inference_torch.engine import Finished, Sequence, TextDelta
    from lamina_inference_torch.provider import load_served_model
    from lamina_inference_torch.sampling import SamplingParams

    served = load_served_model(gguf, TorchConfig(models=[str(gguf)], dtype=dtype, quantize=quantize, threads=threads))
    prompt = chat_prompt_ids(served.tokenizer)
    try:
        rates = []
        for _ in range(2):  # the first run warms up
            stamps: list[float] = []
            finished = []

            def emit(event, stamps=stamps, finished=finished) -> None:
                if isinstance(event, TextDelta):
                    stamps.extend(time.perf_counter() for _ in event.tokens)
                elif isinstance(event, Finished):
                    finished.append(event)

            # Greedy, with stop tokens biased away so every run decodes exactly DECODE_TOKENS + 1 tokens.
            bias = dict.fromkeys(served.tokenizer.stop_token_ids, -100.0)
            sequence = Sequence(prompt, SamplingParams(temperature=0, logit_bias=bias), DECODE_TOKENS + 1, [], emit)
            served.engine.submit(sequence)
            while not finished:
                time.sleep(0.01)
            rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        return rates[-1]
    finally:
        served.engine.close()


async def stream_once(client, model: str, question: str, max_tokens: int, bias: dict[str, float]) -> dict:
    start = time.perf_counter()
    stamps: list[float] = []
    tokens = 0
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        logit_bias=bias,
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return {"start": start, "first": stamps[0], "last": stamps[-1], "tokens": tokens}


def stop_token_ids(gguf: Path) -> list[int]:
    from lamina_inference_torch.tokenizer import load_tokenizer
    from lamina_inference_torch.weights import read_gguf_metadata

    return sorted(load_tokenizer(gguf, read_gguf_metadata(gguf)).stop_token_ids)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run_yaml: Path, port: int, log_path: Path) -> subprocess.Popen:
    """`lamina run` in a process of its own; returns once /v1/health answers."""
    command = [sys.executable, "-c", "from lamina.cli import main; main()", "run", str(run_yaml), "--port", str(port)]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"the server did not become healthy in 300 s:\n{log_path.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


async def bench_http(gguf: Path, dtype: str, quantize: str, threads: int, stops: list[int]) -> dict[str, float]:
    from openai import AsyncOpenAI

    torch_config = {"models": [str(gguf)], "dtype": dtype, "quantize": quantize, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="lamina-bench-") as scratch:
        run_yaml = Path(scratch) / "run.yaml"
        run_config = {
            "version": 1,
            "distro": "bench",
            "storage": {"dir": str(Path(scratch) / "data")},
            "providers": {"inference": [{"id": "torch", "type": "inline::torch", "config": torch_config}]},
        }
        run_yaml.write_text(json.dumps(run_config))  # JSON is YAML
        port = free_port()
        server = start_server(run_yaml, port, Path(scratch) / "server.log")
        try:
            figures = await _http_runs(AsyncOpenAI, f"http://127.0.0.1:{port}/v1", stops)
            figures["peak_rss_mib"] = peak_rss_mib(server.pid)
            return figures
        finally:
            stop_server(server)


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM): for the server, loading (a first start converts the weights)
    and serving everything measured here."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _http_runs(client_class, base_url: str, stops: list[int]) -> dict[str, float]:
    client = client_class(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
    model = (await client.models.list()).data[0].id
    # End-of-turn tokens biased away: every stream decodes max_tokens, so all of them run for the whole span.
    bias = dict.fromkeys((str(i) for i in stops), -100.0)
    await stream_once(client, model, QUESTION, 8, bias)  # warm-up
    single = await stream_once(client, model, QUESTION, DECODE_TOKENS, bias)
    single_rate = (single["tokens"] - 1) / (single["last"] - single["first"])
    questions = [f"{QUESTION} Story number {i + 1}." for i in range(STREAMS)]
    runs = await asyncio.gather(*(stream_once(client, model, q, DECODE_TOKENS, bias) for q in questions))
    span = max(r["last"] for r in runs) - min(r["first"] for r in runs)
    aggregate = sum(r["tokens"] - 1 for r in runs) / span
    wall = sum(r["tokens"] for r in runs) / (max(r["last"] for r in runs) - min(r["start"] for r in runs))
    long_text = " ".join(["The lighthouse stood on the rocky shore, its lamp turning through the night."] * 40)
    words = long_text.split()
    ttfts, prompt_tokens = [], 0
    for _ in range(2):
        start = time.perf_counter()
        first = None
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": " ".join(words[:430]) + "\nSummarize."}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
            if chunk.usage:
                prompt_tokens = chunk.usage.prompt_tokens
        ttfts.append(first)
    await client.close()
    return {
        "single": single_rate,
        "aggregate8": aggregate,
        "aggregate8_wall": wall,
        "ttft": min(ttfts),
        "ttft_prompt_tokens": prompt_tokens,
    }


def run_part(part: str, args: argparse.Namespace) -> float | list[int]:
    """Run one measured part in a fresh interpreter; its result comes back as the last line of its stdout."""
    command = [sys.executable, __file__, "--part", part, "--gguf", str(args.gguf), "--dtype", args.dtype]
    command += ["--quantize", args.quantize, "--threads", str(args.threads)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


PARTS = {
    "transformers": lambda a: bench_transformers(a.gguf, a.threads),
    "engine": lambda a: bench_engine_single(a.gguf, a.dtype, a.quantize, a.threads),
    "stop-tokens": lambda a: stop_token_ids(a.gguf),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=Path(DEFAULT_GGUF))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--quantize", default="auto", choices=["auto", "none", "int8", "int4"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)  # internal: one measured part
    args = parser.parse_args()
    if args.part:
        print(json.dumps(PARTS[args.part](args)))
        return
    print(f"model {args.gguf.name}; ours: dtype={args.dtype} quantize={args.quantize}; threads={args.threads}")
    print(METHODOLOGY)

    reference = None if args.skip_transformers else run_part("transformers", args)
    if reference is not None:
        print(f"transformers generate (float32, greedy), single stream decode: {reference:7.1f} tok/s")
    engine_rate = run_part("engine", args)
    print(f"inline::torch engine, single stream decode:                     {engine_rate:7.1f} tok/s")
    stops = run_part("stop-tokens", args)
    http = asyncio.run(bench_http(args.gguf, args.dtype, args.quantize, args.threads, stops))
    print(f"inline::torch HTTP, single stream decode:                       {http['single']:7.1f} tok/s")
    print(
        f"inline::torch HTTP, {STREAMS} concurrent streams, aggregate decode:     {http['aggregate8']:7.1f} tok/s "
        f"({http['aggregate8_wall']:.1f} tok/s counting prefill and queueing)"
    )
    print(
        f"inline::torch HTTP, time to first token, {http['ttft_prompt_tokens']}-token prompt: "
        f"{http['ttft'] * 1000:7.0f} ms"
    )
    print(f"inline::torch HTTP, peak RSS of the server (first start, converting): {http['peak_rss_mib']:7.0f} MiB")
    if reference is not None:
        ratio = http["single"] / reference
        print(
            f"ratio single stream (HTTP) / transformers: {ratio:.2f}x (target >= 2x) {'OK' if ratio >= 2 else 'MISSED'}"
        )
        ratio = engine_rate / reference
        print(f"ratio single stream (engine) / transformers: {ratio:.2f}x")
    ratio = http["aggregate8"] / http["single"]
    print(
        f"ratio {STREAMS}-stream aggregate / single stream: {ratio:.2f}x (target >= 3x) {'OK' if ratio >= 3 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
