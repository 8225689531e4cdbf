"""Embedding throughput: the inline::sentence-transformers provider's Python API vs sentence-transformers itself.

    python bench/embeddings.py [MODEL_FOLDER] [--sentences 1024] [--rounds 3]

MODEL_FOLDER defaults to $LAMINA_TEST_MINILM. Both sides run in one process on the same torch threads, in
alternating rounds; the best round of each counts. Three measurements, sentences per second:
  direct      SentenceTransformer.encode, 32 sentences per call
  provider    provider.embeddings(), 32 sentences per request, one request at a time
  concurrent  provider.embeddings(), 32 single-sentence requests at a time (merged by the provider's queue)
The target: provider within 10% of direct.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time

BATCH = 32
WORDS = [
    "the",
    "a",
    "model",
    "server",
    "plugin",
    "vector",
    "search",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "embeddings",
    "are",
    "compact",
    "numeric",
    "summaries",
    "of",
    "text",
    "that",
    "let",
    "programs",
    "compare",
    "meaning",
    "rather",
    "than",
    "spelling",
    "while",
    "batching",
    "keeps",
    "cores",
    "busy",
]


def make_sentences(count: int) -> list[str]:
    rng = random.Random(7)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))) for _ in range(count)]


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=os.environ.get("LAMINA_TEST_MINILM"))
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.model:
        sys.exit("give a sentence-transformers model folder, or set LAMINA_TEST_MINILM")

    import torch
    from lamina.apis.inference import EmbeddingRequest
    from lamina_inference_sentence_transformers import SentenceTransformersConfig, create
    from sentence_transformers import SentenceTransformer

    direct_model = SentenceTransformer(args.model, device="cpu", local_files_only=True)
    provider = await create(SentenceTransformersConfig(models=[args.model], batch_size=BATCH), None)  # type: ignore[arg-type]
    (info,) = await provider.list_models()
    sentences = make_sentences(args.sentences)
    batches = chunks(sentences, BATCH)

    def run_direct() -> None:
        for batch in batches:
            direct_model.encode(batch, batch_size=BATCH, show_progress_bar=False)

    async def run_provider() -> None:
        for batch in batches:
            await provider.embeddings(EmbeddingRequest(model=info.id, input=batch))

    async def run_concurrent() -> None:
        for batch in batches:
            await asyncio.gather(*(provider.embeddings(EmbeddingRequest(model=info.id, input=s)) for s in batch))

    run_direct()  # warm up both, so first-call costs stay out of the figures
    await run_provider()
    best = {"direct": float("inf"), "provider": float("inf"), "concurrent": float("inf")}
    for _ in range(args.rounds):
        start = time.perf_counter()
        run_direct()
        best["direct"] = min(best["direct"], time.perf_counter() - start)
        start = time.perf_counter()
        await run_provider()
        best["provider"] = min(best["provider"], time.perf_counter() - start)
        start = time.perf_counter()
        await run_concurrent()
        best["concurrent"] = min(best["concurrent"], time.perf_counter() - start)
    await provider.close()

    rates = {name: len(sentences) / seconds for name, seconds in best.items()}
    print(f"model {args.model}, {len(sentences)} sentences, batch {BATCH}, torch threads {torch.get_num_threads()}")
    for name, rate in rates.items():
        print(f"{name:>10}: {rate:8.1f} sentences/s  ({rate / rates['direct']:.1%} of direct)")
    ratio = rates["provider"] / rates["direct"]
    print(f"provider/direct = {ratio:.3f}: {'within' if ratio >= 0.9 else 'OUTSIDE'} the 10% target")


if __name__ == "__main__":
    asyncio.run(main())
