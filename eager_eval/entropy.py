"""Top-K entropy (METHOD.md section 2): the uncertainty signal that decides a fork."""

from __future__ import annotations

import bisect
import math
from typing import Sequence


def topk_entropy(logprobs: Sequence[float], k: int | None = None) -> float:
    """Shannon entropy in nats of the K most probable tokens, renormalised to sum to 1.

    `logprobs` are log-probabilities, most probable first (any order works). At most ln K
    (about 3.0 for K = 20): a threshold above that never branches.
    """
    values = list(logprobs if k is None else sorted(logprobs, reverse=True)[:k])
    if not values:
        raise ValueError("topk_entropy needs at least one log-probability, got none")
    top = max(values)
    if top == -math.inf:
        raise ValueError("topk_entropy got only -inf log-probabilities")
    weights = [math.exp(v - top) for v in values]  # shift by the max: no underflow
    total = sum(weights)
    return -sum((w / total) * math.log(w / total) for w in weights if w > 0.0)


class EntropyHistory:
    """The entropies one prompt recorded so far, kept sorted for percentile queries."""

    def __init__(self) -> None:
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, values: Sequence[float]) -> None:
        for v in values:
            bisect.insort(self._sorted, v)

    def percentile(self, q: float) -> float:
        """q-th percentile with linear interpolation (numpy's default method)."""
        data = self._sorted
        if not data:
            raise ValueError("percentile of an empty history")
        index = (q / 100.0) * (len(data) - 1)
        lo = math.floor(index)
        hi = min(lo + 1, len(data) - 1)
        return data[lo] + (data[hi] - data[lo]) * (index - lo)
