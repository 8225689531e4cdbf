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


@pytest.mark.parametrize("spread", [0.1, 1.0, 8.0])  # flat (nucleus of thousands) to peaked (a few tokens)
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.999])
@pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "compiled"])
def test_draws_cover_the_nucleus_a_full_sort_keeps_in_proportion(spread, top_p, compiled):
    """Both implementations (numpy's, and the compiled op that replaces it where the kernels build): drawn at
    evenly spaced points of [0, 1), each token of the nucleus comes up in proportion to its probability within it
    (to the grid's resolution), and no other token ever does."""
    import numpy as np
    from lamina_inference_torch import kernels
    from lamina_inference_torch.sampling import _sample

    logits = np.random.default_rng(0).normal(0, spread, 49152).astype(np.float32)
    logits[::7] = -np.inf  # a grammar's mask
    weights = np.exp(logits.astype(np.float64) - logits.max())
    order = np.argsort(-weights, kind="stable")
    preceding = np.cumsum(weights[order]) - weights[order]
    nucleus = order[preceding < top_p * weights.sum()]
    share = dict(zip(nucleus.tolist(), (weights[nucleus] / weights[nucleus].sum()).tolist(), strict=True))
    if compiled and not kernels.available():
        pytest.skip("the compiled kernels do not build here")
    scratch = np.empty_like(logits)
    points = 500
    drawn: dict[int, int] = {}
    for k in range(points):
        uniform = (k + 0.5) / points
        if compiled:
            token = torch.ops.lamina_torch.sample(torch.from_numpy(logits), 1.0, top_p, 0.0, uniform)
        else:
            token = _sample(logits, 1.0, top_p, 0.0, uniform, scratch)
        drawn[token] = drawn.get(token, 0) + 1
    assert set(drawn) <= set(share)
    for token, fraction in share.items():
        assert abs(drawn.get(token, 0) - fraction * points) <= 1.0 + 1e-3 * points


def test_penalties_and_bias_apply_to_seen_tokens_only():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    params = SamplingParams(
        temperature=0, repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25, logit_bias={2: 10}
    )
    sampler = Sampler(params, vocab_size=4)
    assert sampler.choose(logits).token == 2  # the bias
    for token in (3, 3, 1):
        sampler.observe(token)
    penalized = sampler._penalized(logits.numpy())
    assert penalized.tolist() == pytest.approx([2.0, -1.0 * 2 - 0.5 - 0.25, 10.5, 3.0 / 2 - 1.0 - 0.25])
    assert logits.tolist() == [2.0, -1.0, 0.5, 3.0]  # the model's row is not modified


def test_logprobs_are_the_log_softmax():
    logits = torch.randn(300)
    choice = Sampler(SamplingParams(temperature=0, top_logprobs=3), vocab_size=300).choose(logits)
    expected = torch.log_softmax(logits, -1)
    assert choice.token == int(logits.argmax()) and choice.logprob == pytest.approx(float(expected.max()), abs=1e-5)
    values, indices = expected.topk(3)
    assert [t for t, _ in choice.top] == indices.tolist()
    assert [v for _, v in choice.top] == pytest.approx(values.tolist(), abs=1e-5)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0, top_logprobs=2),
        SamplingParams(temperature=0.0, logit_bias={49: 50.0}),
        SamplingParams(temperature=1.5, seed=1),
        SamplingParams(temperature=1.0, top_k=3, seed=2),  # top-k wider than what the mask leaves open
        SamplingParams(temperature=0.8, top_p=0.5, min_p=0.1, seed=3, repetition_penalty=1.3, frequency_penalty=1.0),
    ],
    ids=["greedy", "greedy-logprobs", "greedy-bias", "sampled", "top-k", "penalized"],
)
def test_a_grammar_mask_limits_every_path_to_its_tokens(params):
    """The likeliest tokens are masked out: whatever the path, only the two allowed ones (2 and 7) come out, and the
    likelier of them (7) is what greedy picks."""
    logits = torch.linspace(0, 5, 50)
    allowed = torch.zeros(50, dtype=torch.bool).numpy()
    allowed[[2, 7]] = True
    sampler = Sampler(params, vocab_size=50)
    chosen = set()
    for _ in range(200):
        choice = sampler.choose(logits, allowed)
        sampler.observe(choice.token)
        chosen.add(choice.token)
    assert chosen <= {2, 7} and 7 in chosen
    if params.greedy:
        assert chosen == {7}
