"""What Anthropic's Messages API costs over chat completions: the same load through one Lamina, in one run.

    python bench/messages.py [--seconds 3]

`lamina run starter` (which installs the Messages API) in front of the fast fake upstream; the same prompt sent
as `POST /v1/chat/completions` and as `POST /v1/messages`, streaming and not, at concurrency 1 and 16. Prints
p50 latency and Lamina's own CPU per request (robust to other load on the machine) for both, and their ratio:
the price of the translation (request, answer and each stream event) and of Anthropic's event framing.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile

import gateway
from gateway import HERE, cpu_seconds, free_port, load, start, stop, wait_healthy

CHAT = {
    "model": "openai/bench",
    "messages": [{"role": "user", "content": "Say hello in a few words."}],
    "max_tokens": 16,
}


def measure(url: str, pid: int, concurrency: int, stream: bool, seconds: float) -> dict[str, float]:
    before = cpu_seconds(pid)
    result = asyncio.run(load(url, concurrency, stream, seconds))
    result["cpu_us"] = (cpu_seconds(pid) - before) / result["n"] * 1e6
    return result


def translation_cost(repeat: int = 5000) -> tuple[float, float]:
    """In-process, µs per request: validating a chat request (what /v1/chat/completions does) against validating
    a Messages request, translating it to chat, validating that, and translating a chat answer back."""
    import timeit

    import orjson
    from lamina.apis.inference.types import ChatCompletionRequest
    from lamina_anthropic_messages import translate
    from lamina_anthropic_messages.router import _chat_request
    from lamina_anthropic_messages.types import MessagesRequest

    body = orjson.dumps(CHAT)
    answer = {
        "id": "chatcmpl-bench",
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * 16}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
    }

    def messages() -> None:
        request = MessagesRequest.model_validate_json(body)
        _chat_request(request, request.max_tokens)
        translate.anthropic_message(answer, [])

    chat = timeit.timeit(lambda: ChatCompletionRequest.model_validate_json(body), number=repeat) / repeat * 1e6
    return chat, timeit.timeit(messages, number=repeat) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    chat_us, messages_us = translation_cost()
    print(f"in-process: chat request {chat_us:.1f} µs, Messages request + translation both ways {messages_us:.1f} µs")
    up_port, port = free_port(), free_port()
    upstream = start(["python", str(HERE / "fake_upstream.py"), str(up_port)])
    with tempfile.TemporaryDirectory() as home:
        env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{up_port}/v1", "LAMINA_HOME": home}
        server = start(["lamina", "run", "starter", "--port", str(port)], env)
        try:
            base = f"http://127.0.0.1:{port}/v1"
            wait_healthy(f"{base}/health")
            wait_healthy(f"{base}/models")
            print("| stream | concurrency | route | p50 ms | Lamina CPU µs/request |")
            print("|---|---|---|---|---|")
            for stream in (False, True):
                for concurrency in (1, 16):
                    rows = {}
                    for route in ("chat/completions", "messages"):
                        gateway.BODY = CHAT  # both routes take this body: `max_tokens` is required by Messages
                        rows[route] = measure(f"{base}/{route}", server.pid, concurrency, stream, args.seconds)
                        row = rows[route]
                        assert row["failures"] == 0, (route, row)
                        print(
                            f"| {'yes' if stream else 'no'} | {concurrency} | {route} | {row['p50']:.2f} | {row['cpu_us']:,.0f} |"
                        )
                    ratio = rows["messages"]["cpu_us"] / rows["chat/completions"]["cpu_us"]
                    print(f"|  |  | messages / chat | | **{ratio:.2f}x** |")
        finally:
            stop(server)
            stop(upstream)


if __name__ == "__main__":
    main()
