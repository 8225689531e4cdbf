"""The sampler's draws follow the distribution it computes, and never pick a token it ruled out."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from lamina_inference_torch.sampling import Sampler, SamplingParams  # noqa: E402


def test_draws_follow_the_probabilities():
    probabilities = [0.2, 0.5, 0.3, 0.0]
    logits = torch.tensor([math.log(p) if p else -math.inf for p in probabilities])
    sampler = Sampler(SamplingParams(temperature=1.0, seed=3), vocab_size=4)
    counts = torch.bincount(torch.tensor([sampler.choose(logits).token for _ in range(4000)]), minlength=4)
    assert counts[3] == 0
    assert torch.allclose(counts.float() / 4000, torch.tensor(probabilities), atol=0.03)


def test_truncated_tokens_are_never_drawn_and_seeds_reproduce():
    logits = torch.linspace(0, 3, 50)
    params = SamplingParams(temperature=2.0, top_k=3, seed=11)
    draws = [Sampler(params, vocab_size=50) for _ in range(2)]
    first = [draws[0].choose(logits).token for _ in range(300)]
    assert set(first) == {47, 48, 49}
    assert [draws[1].choose(logits).token for _ in range(300)] == first
