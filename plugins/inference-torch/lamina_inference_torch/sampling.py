"""Turning one row of logits into the next token: penalties, temperature, top-k/top-p/min-p, seeded draws."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lamina_inference_torch import kernels


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    top_logprobs: int | None = None  # None: no logprobs; 0..20: the chosen token's, plus that many alternatives

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


@dataclass
class TokenChoice:
    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


class Sampler:
    """Per-sequence sampling state: its own random generator, so a seed reproduces regardless of the batch.

    The arithmetic is numpy on the logits row, not torch: on the engine thread torch runs a 49k-element op on its
    OpenMP team, and on a busy 2-core machine each such op cost ~0.5-2 ms waiting for the other core (measured:
    temperature + top_p 44 ms a token with 2 threads, 7 ms with 1, against ~0.15 ms for greedy). The draw itself
    (temperature, min_p, top_p) is the compiled `sample` op where the kernels are built (one thread, ~40-100 us a
    token), else `_sample` in numpy (~100-200 us): at 8 streams the numpy draw cost ~15% of a 7 ms decode step.
    top_p sorts only the few tokens that hold the mass, not the whole vocabulary; penalties touch only the tokens
    seen so far.
    """

    def __init__(self, params: SamplingParams, vocab_size: int) -> None:
        self.params = params
        self.generator = torch.Generator()
        self.generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        self.vocab_size = vocab_size
        self.penalized = bool(params.frequency_penalty or params.presence_penalty or params.repetition_penalty != 1.0)
        self.counts: dict[int, int] = {}
        self.bias: tuple[np.ndarray, np.ndarray] | None = None
        # The row's weights, computed in place: a fresh 49k-float array each token cost its page faults too.
        self.scratch = np.empty(vocab_size, dtype=np.float32)
        if params.logit_bias:
            ids = [i for i in params.logit_bias if 0 <= i < vocab_size]
            self.bias = (np.array(ids, dtype=np.int64), np.array([params.logit_bias[i] for i in ids], np.float32))

    def observe(self, token: int) -> None:
        if self.penalized:
            self.counts[token] = self.counts.get(token, 0) + 1

    def choose(self, logits: torch.Tensor, allowed: np.ndarray | None = None) -> TokenChoice:
        """Pick the next token from a float32 [V] row of raw logits; `allowed` (a bool [V] mask, from a grammar)
        limits the choice to its tokens, after penalties and before temperature and truncation."""
        p = self.params
        plain = self.bias is None and not (self.penalized and self.counts)
        if p.greedy and p.top_logprobs is None and plain:
            if allowed is None:
                return TokenChoice(int(logits.argmax()))
            return TokenChoice(int(np.where(allowed, logits.float().numpy(), -np.inf).argmax()))
        x = self._penalized(logits.float().numpy())
        candidates = x if allowed is None else np.where(allowed, x, -np.inf)
        token = int(candidates.argmax()) if p.greedy else self._draw(candidates)
        if p.top_logprobs is None:
            return TokenChoice(token)
        # Logprobs are reported from the model's distribution after penalties, before temperature/truncation (and
        # before a grammar's mask, which is a truncation too).
        top_value = x.max()
        logprobs = x - (top_value + np.log(np.exp(x - top_value, dtype=np.float64).sum()))
        top = None
        if p.top_logprobs:
            best = np.argpartition(logprobs, len(logprobs) - p.top_logprobs)[-p.top_logprobs :]
            best = best[np.argsort(-logprobs[best], kind="stable")]
            top = [(int(i), float(logprobs[i])) for i in best]
        return TokenChoice(token, float(logprobs[token]), top)

    def _penalized(self, logits: np.ndarray) -> np.ndarray:
        p = self.params
        if self.bias is None and not self.counts:
            return logits
        logits = logits.copy()
        if self.bias is not None:
            logits[self.bias[0]] += self.bias[1]  # ids are distinct (dict keys): no need for np.add.at
        if self.counts:
            ids = np.fromiter(self.counts, dtype=np.int64, count=len(self.counts))
            counts = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
            values = logits[ids]
            if p.repetition_penalty != 1.0:
                values = np.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
            logits[ids] = values - p.frequency_penalty * counts - p.presence_penalty
        return logits

    def _draw(self, logits: np.ndarray) -> int:
        p = self.params
        ids: np.ndarray | None = None  # the candidates' token ids, when not the whole vocabulary
        if 0 < p.top_k < logits.shape[0]:  # the top k of the logits are the top k after temperature
            ids = np.argpartition(logits, logits.shape[0] - p.top_k)[-p.top_k :]
            logits = logits[ids]
        uniform = float(torch.rand(1, generator=self.generator))
        if kernels.available():
            index = torch.ops.lamina_torch.sample(torch.from_numpy(logits), p.temperature, p.top_p, p.min_p, uniform)
        else:
            index = _sample(logits, p.temperature, p.top_p, p.min_p, uniform, self.scratch)
        if index < 0:  # every logit is -inf
            index = int(logits.argmax())
        return index if ids is None else int(ids[index])


def _sample(
    logits: np.ndarray, temperature: float, top_p: float, min_p: float, uniform: float, scratch: np.ndarray
) -> int:
    """The compiled `sample` op (block_linear.cpp) in numpy, where the kernels are not built: the index drawn by
    `uniform` (in [0, 1)) from weights exp((logit - max) / temperature), those below min_p dropped, limited to the
    smallest set of most likely entries whose mass reaches top_p. The nucleus: a growing top slice found by
    argpartition is sorted until it holds that mass, not the whole row, among the entries within a factor 1e-6 of
    the top when they hold the mass (usually a few hundred of a 49k vocabulary, found in one pass)."""
    # In float32 (a float64 exp of the row cost ~4x as much), in place in `scratch`; the largest weight is 1.
    weights = np.subtract(logits, logits.max(), out=scratch[: logits.shape[0]])
    weights *= np.float32(1.0 / temperature)
    np.exp(weights, out=weights)
    if min_p > 0:
        weights[weights < min_p] = 0.0
    ids = None
    if top_p < 1.0:
        needed = top_p * float(weights.sum())  # float32, summed pairwise: a float64 sum converts the row first (4x)
        near = np.flatnonzero(weights >= 1e-6)
        if len(near) < len(weights) and weights[near].sum(dtype=np.float64) >= needed:
            ids = near[_top_mass(weights[near], needed)]
        else:
            ids = _top_mass(weights, needed)
        weights = weights[ids]
    # Inverse-CDF draw: torch.multinomial costs ~1.2 ms on a 49k vocabulary.
    cdf = np.cumsum(weights, dtype=np.float64)
    index = int(np.searchsorted(cdf, uniform * cdf[-1], side="right"))
    if index >= len(weights):  # rounding put the draw at the very top: take the last possible entry
        index = int(np.nonzero(weights)[0][-1])
    return index if ids is None else int(ids[index])


def _top_mass(weights: np.ndarray, needed: float) -> np.ndarray:
    size = len(weights)
    count = min(size, 64)
    while True:
        top = np.argpartition(weights, size - count)[size - count :] if count < size else np.arange(size)
        top = top[np.argsort(-weights[top], kind="stable")]
        mass = np.cumsum(weights[top], dtype=np.float64)
        if mass[-1] >= needed or count == size:
            break
        count = min(size, count * 8)
    keep = int(np.searchsorted(mass - weights[top], needed, side="left"))  # entries whose preceding mass < needed
    return top[: max(keep, 1)]
