"""Top-K entropy (METHOD.md section 2), the uncertainty signal that decides a fork, and
DeepConf's token confidence (docs/CONFIDENCE.md), read from the same top-K log-probabilities."""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np


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


def topk_entropies(logprobs: "np.ndarray") -> "np.ndarray":
    """`topk_entropy` of every row of a [rows, K] array of log-probabilities, at once.

    Backends call this once per step for all rows (float64, like the scalar version), so the
    runner does no per-token arithmetic. Rows may hold -inf (a vocabulary smaller than K).
    """
    import numpy as np

    values = np.asarray(logprobs, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"topk_entropies needs a [rows, K >= 1] array, got shape {values.shape}")
    weights = np.exp(values - values.max(axis=1, keepdims=True))  # shift by the max: no underflow
    p = weights / weights.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0.0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)


LOGPROB_FLOOR = -100.0
"""A log-probability below this counts as this in the token confidence: a top-K entry the
sampler masked (entropy_source=processed gives it -inf) keeps the confidence finite. e^-100 is
below float32's smallest normal number, so no probability a model computes is raised."""


def topk_confidence(logprobs: Sequence[float], k: int | None = None) -> float:
    """DeepConf's token confidence C = -(1/k) * sum of the k largest log-probabilities.

    Fu et al. 2025 (arXiv 2508.15260), eq. 2: high when the distribution is peaked (the tokens
    after the first are improbable), low when it is flat. `k` None: all of `logprobs`; fewer
    than k given (a distribution whose whole support is smaller, as the scripted engine's):
    the mean over those given.
    """
    values = sorted(logprobs, reverse=True)[:k] if k is not None else list(logprobs)
    if not values:
        raise ValueError("topk_confidence needs at least one log-probability, got none")
    return -sum(max(v, LOGPROB_FLOOR) for v in values) / len(values)


def topk_confidences(logprobs: "np.ndarray", k: int | None = None) -> "np.ndarray":
    """`topk_confidence` of every row of a [rows, K] array, most probable first, at once:
    the mean over the first k columns (all when k is None or K < k), in float64."""
    import numpy as np

    values = np.asarray(logprobs, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"topk_confidences needs a [rows, K >= 1] array, got shape {values.shape}")
    if k is not None:
        values = values[:, :k]
    return -np.maximum(values, LOGPROB_FLOOR).mean(axis=1)


def rows_array(rows: Sequence[Sequence[float]]) -> "np.ndarray":
    """Rows of log-probabilities as one float64 [rows, width] array; shorter rows padded with
    -inf (zero probability: no share of the entropy). At least one row, one value."""
    import numpy as np

    width = len(rows[0])
    if width and all(len(r) == width for r in rows):  # the usual case: one flat array
        return np.fromiter(itertools.chain.from_iterable(rows), np.float64,
                           width * len(rows)).reshape(len(rows), width)
    width = max(len(r) for r in rows)
    if width == 0:
        raise ValueError("rows_array got rows without log-probabilities")
    values = np.full((len(rows), width), -np.inf)
    for i, r in enumerate(rows):
        values[i, : len(r)] = r
    return values


class EntropyHistory:
    """The entropies one prompt recorded so far, for one percentile of them.

    Two heaps split the values at the percentile's lower index: `_low` (a max-heap, negated)
    holds the smallest `lo` values and `_high` (a min-heap) the rest, so the two order
    statistics the interpolation needs are `_high[0]` and the smaller child of the root. Adding
    is O(log n) and values wait in a plain list until a percentile is asked for: a tree whose
    entropies never exceed theta never needs one (the threshold is at least theta).
    """

    def __init__(self, q: float) -> None:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        self.q = q
        self._low: list[float] = []
        self._high: list[float] = []
        self._waiting: list[float] = []

    def __len__(self) -> int:
        return len(self._low) + len(self._high) + len(self._waiting)

    def add(self, values: Sequence[float]) -> None:
        self._waiting.extend(values)

    def _index(self, n: int) -> float:
        return (self.q / 100.0) * (n - 1)

    def _take_waiting(self) -> None:
        low, high = self._low, self._high
        for v in self._waiting:
            if low and v < -low[0]:
                heapq.heappush(low, -v)
            else:
                heapq.heappush(high, v)
            target = math.floor(self._index(len(low) + len(high)))
            while len(low) > target:
                heapq.heappush(high, -heapq.heappop(low))
            while len(low) < target:
                heapq.heappush(low, -heapq.heappop(high))
        self._waiting.clear()

    def percentile(self) -> float:
        """The q-th percentile with linear interpolation (numpy's default method)."""
        if self._waiting:
            self._take_waiting()
        high = self._high
        if not high:
            raise ValueError("percentile of an empty history")
        index = self._index(len(self._low) + len(high))
        lo = math.floor(index)
        below = high[0]
        if len(high) == 1:
            return below
        above = min(high[1:3])  # the second smallest: a child of the root
        return below + (above - below) * (index - lo)
