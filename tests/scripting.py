"""Distributions and scripts for the ScriptedBackend, shared by the core's tests."""

from __future__ import annotations

import math

from eager_eval.backends.scripted import Distribution
from eager_eval.seeds import unit_uniform

EOS = 0


def flat(tokens: list[int]) -> Distribution:
    """Equal probability over `tokens`: entropy ln(len(tokens)); rank order as given."""
    lp = -math.log(len(tokens))
    return [(t, lp) for t in tokens]


def peaked(token: int, other: int = 99) -> Distribution:
    """Almost certain `token`: entropy about 0.056 nats."""
    return [(token, math.log(0.99)), (other, math.log(0.01))]


def entropy_of(dist: Distribution) -> float:
    ps = [math.exp(lp) for _, lp in dist]
    z = sum(ps)
    return -sum(p / z * math.log(p / z) for p in ps)


def hashed_script(salt: int = 0, eos_after: int = 12, vocab: int = 30):
    """A pseudo-random script: varied entropies at every position, EOS near the end.

    The distribution is a pure function of (prompt, generated tokens), like a model.
    """

    def script(prompt, generated):
        key = hash((salt, prompt, generated)) & ((1 << 62) - 1)
        n = len(generated)
        if n >= eos_after + (key % 3):
            return peaked(EOS)
        width = 2 + int(unit_uniform(key, 1) * 6)  # 2..7 tokens: entropies ln2..ln7
        start = 1 + int(unit_uniform(key, 2) * (vocab - width - 1))
        tokens = list(range(start, start + width))
        weights = [1.0 + unit_uniform(key, 10 + i) * 3 for i in range(width)]
        weights.sort(reverse=True)
        z = sum(weights)
        return [(t, math.log(w / z)) for t, w in zip(tokens, weights)]

    return script
