"""Reranking benchmark: what reranking adds to a vector-store search, and the gateway's cost on a rerank call.

    python bench/rerank.py [--requests 200]

A fake OpenAI embeddings upstream and a fake `/v1/rerank` server (tests/e2e/fake_openai.py, fake_rerank.py) on
127.0.0.1, a Lamina server in front of them (inline::hnswlib, remote::rerank), a store of 60 one-sentence files.
In one run: sequential searches with `ranker: none` against the same searches reranked (the reranker gets the
`hybrid_depth` pool of 40 candidates), and `POST /v1alpha/inference/rerank` of 40 items through Lamina against
the same request sent straight to the fake reranker. The fakes answer at once, so the ratios are Lamina's share.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import requests
from lamina.testing import serve
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from fake_openai import EMBEDDING_MODEL, FakeOpenAI
from fake_rerank import MODEL, FakeReranker


def timed(call: object, count: int) -> list[float]:
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        durations.append((time.perf_counter() - started) * 1000)
    return durations


def row(name: str, durations: list[float], baseline: list[float] | None) -> str:
    p50 = statistics.median(durations)
    ratio = f"{p50 / statistics.median(baseline):.2f}x" if baseline else ""
    return f"| {name} | {p50:.2f} | {statistics.quantiles(durations, n=100)[98]:.2f} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    count = parser.parse_known_args()[0].requests
    with FakeOpenAI() as fake, FakeReranker() as reranker:
        config = {
            "providers": {
                "inference": [
                    {
                        "id": "fake",
                        "type": "remote::openai",
                        "config": {
                            "base_url": fake.base_url,
                            "models": [EMBEDDING_MODEL],
                            "embedding_models": [EMBEDDING_MODEL],
                        },
                    }
                ],
                "files": [{"id": "files", "type": "inline::localfs"}],
                "vector_io": [{"id": "hnswlib", "type": "inline::hnswlib"}],
                "rerank": [
                    {"id": "rr", "type": "remote::rerank", "config": {"base_url": reranker.base_url, "models": [MODEL]}}
                ],
            },
            "apis": {"vector_io": {"default_embedding_model": f"fake/{EMBEDDING_MODEL}"}},
        }
        with serve(config) as url:
            client = OpenAI(base_url=url, api_key="unused", max_retries=0)
            store = client.vector_stores.create(name="bench")
            files = [
                client.files.create(
                    file=(f"f{i}.txt", f"Note {i} about the lake and trout {i % 7}.".encode()), purpose="assistants"
                ).id
                for i in range(60)
            ]
            batch = client.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=files)
            assert batch.file_counts.completed == 60, batch.file_counts
            session = requests.Session()
            search_url = f"{url}/vector_stores/{store.id}/search"

            def search(ranker: str) -> None:
                body = {"query": "trout in the lake", "max_num_results": 10, "ranking_options": {"ranker": ranker}}
                assert session.post(search_url, json=body, timeout=30).status_code == 200

            items = [f"Note {i} about the lake and trout {i % 7}." for i in range(40)]
            body = {"model": MODEL, "query": "trout in the lake", "documents": items}

            def direct() -> None:
                assert session.post(f"{reranker.base_url}/rerank", json=body, timeout=30).status_code == 200

            alpha = url.removesuffix("/v1") + "/v1alpha/inference/rerank"
            lamina_body = {"model": f"rr/{MODEL}", "query": "trout in the lake", "items": items}

            def through_lamina() -> None:
                assert session.post(alpha, json=lamina_body, timeout=30).status_code == 200

            for call in (lambda: search("none"), lambda: search(f"rr/{MODEL}"), direct, through_lamina):
                timed(call, 20)  # warm up
            plain = timed(lambda: search("none"), count)
            reranked = timed(lambda: search(f"rr/{MODEL}"), count)
            straight = timed(direct, count)
            gateway = timed(through_lamina, count)
    print(f"{count} sequential requests each\n")
    print("| request | p50 ms | p99 ms | ratio to the line above |")
    print("|---|---|---|---|")
    print(row("search, ranker none (60 chunks, top 10)", plain, None))
    print(row("search, reranked (40 candidates)", reranked, plain))
    print(row("rerank 40 items, straight to the fake", straight, None))
    print(row("rerank 40 items, through Lamina", gateway, straight))


if __name__ == "__main__":
    main()
