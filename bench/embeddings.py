"""Embedding throughput: the inline::sentence-transformers provider's Python API vs sentence-transformers itself.

    python bench/embeddings.py [MODEL_FOLDER] [--sentences 512] [--rounds 3]

MODEL_FOLDER defaults to $LAMINA_TEST_MINILM. All sides run in one process on the same torch threads,
interleaved batch by batch (so load from elsewhere hits each alike). Three measurements, sentences per second:
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
TEXT = (
    "the a model server plugin vector search quick brown fox jumps over lazy dog embeddings are compact numeric "
    "summaries of text that let programs compare meaning rather than spelling while batching keeps cores busy"
)


def make_sentences(count: int) -> list[str]:
    rng = random.Random(7)
    words = TEXT.split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 40))) for _ in range(count)]


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=os.environ.get("LAMINA_TEST_MINILM"))
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.model:
        sys.exit("give a sentence-transformers model folder, or set LAMINA_TEST_MINILM")

    import torch
    from lamina.apis.inference.types import EmbeddingRequest
    from lamina_inference_sentence_transformers import SentenceTransformersConfig
    from lamina_inference_sentence_transformers.provider import SentenceTransformersInference
    from sentence_transformers import SentenceTransformer

    direct_model = SentenceTransformer(args.model, device="cpu", local_files_only=True)
    provider = SentenceTransformersInference(SentenceTransformersConfig(models=[args.model], batch_size=BATCH), "st")
    (info,) = await provider.list_models()
    sentences = make_sentences(args.sentences)
    batches = chunks(sentences, BATCH)

    async def direct(batch: list[str]) -> None:
        direct_model.encode(batch, batch_size=BATCH, show_progress_bar=False)

    async def through_provider(batch: list[str]) -> None:
        await provider.embeddings(EmbeddingRequest(model=info.id, input=batch))

    async def concurrent(batch: list[str]) -> None:
        await asyncio.gather(*(provider.embeddings(EmbeddingRequest(model=info.id, input=s)) for s in batch))

    runs = {"direct": direct, "provider": through_provider, "concurrent": concurrent}
    for run in runs.values():  # warm up, so first-call costs stay out of the figures
        await run(batches[0])
    # Interleaved batch by batch, so a machine whose load drifts during the run treats each side alike.
    seconds = dict.fromkeys(runs, 0.0)
    for round_number in range(args.rounds):
        for batch in batches:
            order = list(runs.items()) if round_number % 2 == 0 else list(reversed(runs.items()))
            for name, run in order:
                start = time.perf_counter()
                await run(batch)
                seconds[name] += time.perf_counter() - start
    await provider.close()

    rates = {name: len(sentences) * args.rounds / total for name, total in seconds.items()}
    print(f"model {args.model}, {len(sentences)} sentences, batch {BATCH}, torch threads {torch.get_num_threads()}")
    for name, rate in rates.items():
        print(f"{name:>10}: {rate:8.1f} sentences/s  ({rate / rates['direct']:.1%} of direct)")
    ratio = rates["provider"] / rates["direct"]
    print(f"provider/direct = {ratio:.3f}: {'within' if ratio >= 0.9 else 'OUTSIDE'} the 10% target")


if __name__ == "__main__":
    asyncio.run(main())
