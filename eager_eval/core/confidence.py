"""A sequence's confidence (DeepConf: Fu et al. 2025, arXiv 2508.15260; docs/CONFIDENCE.md).

Token confidence C_i = -(1/k) * sum of the k largest log-probabilities at position i
(`entropy.topk_confidence`, computed by the backends in one batch per step, beside the
entropy). Per sequence of n tokens, with groups = sliding windows of w tokens (w =
`confidence_window`; a sequence shorter than w is one group of all its tokens):

- mean:          the mean of all C_i;
- tail:          the mean of the last w tokens (the paper's tail of 2,048 tokens: one length
                 for both, w);
- lowest_group:  the lowest group mean (what DeepConf online stops on);
- bottom_10:     the mean of the lowest 10% of the n - w + 1 group means (at least one).

`ConfidenceTrack` keeps them while a sequence decodes, without a Python float per token: the
last w values and the ones since its last fold (float32 arrays), running sums, the lowest
group so far, and the group means that can still be among the final bottom 10% (a float32
buffer of at most about 20% of the windows the sequence can reach, cut back with one numpy
partition when it fills). Per generated token: one float32 append (folded by numpy every
FOLD_EVERY tokens); per live sequence: 4 * (w + FOLD_EVERY) bytes plus that buffer (about
37 KB at the paper's w = 2,048 and 32,768 new tokens); a finished sequence keeps four floats
(`ConfidenceStats`).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Sequence

BOTTOM_SHARE = 0.1
"""bottom_10: the share of a sequence's group means averaged (the paper's 10%)."""


class ConfidenceMeasure(str, Enum):
    """Which of a sequence's confidences weighs its vote (and filters the top-eta% votes)."""

    MEAN = "mean"
    """Mean token confidence over the whole sequence."""
    TAIL = "tail"
    """Mean over its last `confidence_window` tokens."""
    LOWEST_GROUP = "lowest_group"
    """Its lowest sliding-window mean (what DeepConf online stops on)."""
    BOTTOM_10 = "bottom_10"
    """Mean of its lowest 10% of sliding-window means (the reference's filtered vote)."""


@dataclass(frozen=True)
class ConfidenceStats:
    """One sequence's confidences (module docstring): what the record stores under
    `confidence`. Higher = more confident."""

    mean: float
    tail: float
    lowest_group: float
    bottom_10: float

    def of(self, measure: ConfidenceMeasure | str) -> float:
        return getattr(self, ConfidenceMeasure(measure).value)

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "tail": self.tail, "lowest_group": self.lowest_group,
                "bottom_10": self.bottom_10}

    @classmethod
    def from_dict(cls, data: Any) -> "ConfidenceStats | None":
        """From JSON; None for anything that is not the four numbers (an older output)."""
        if not isinstance(data, Mapping):
            return None
        values = []
        for m in ConfidenceMeasure:
            value = data.get(m.value)
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    return None
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return None
            values.append(float(value))
        return cls(*values)


def confidence_stats(values: Sequence[float], window: int) -> ConfidenceStats:
    """The four confidences of a whole sequence's token confidences, at once (numpy): the
    definition `ConfidenceTrack` is tested against."""
    import numpy as np

    c = np.asarray(values, dtype=np.float64)
    if c.size == 0:
        raise ValueError("confidence_stats needs at least one token confidence")
    if c.size < window:
        one = float(c.mean())
        return ConfidenceStats(one, one, one, one)
    sums = np.concatenate([[0.0], np.cumsum(c)])
    groups = (sums[window:] - sums[:-window]) / window  # [n - w + 1]
    b = bottom_count(groups.size)
    return ConfidenceStats(float(c.mean()), float(groups[-1]), float(groups.min()),
                           float(np.sort(groups)[:b].mean()))


def bottom_count(n_groups: int) -> int:
    """How many of n group means bottom_10 averages: 10%, rounded down, at least one (the
    reference's `max(1, int(len * 0.1))`)."""
    return max(1, int(n_groups * BOTTOM_SHARE))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default), pure Python."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    index = (q / 100.0) * (len(ordered) - 1)
    lo = math.floor(index)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (index - lo)


class TrackShape:
    """What every track of a tree shares: the window and how many group means to keep."""

    __slots__ = ("window", "keep", "limit")

    def __init__(self, window: int, max_tokens: int) -> None:
        if window < 1:
            raise ValueError(f"confidence window must be >= 1, got {window}")
        self.window = window
        # the most group means the final bottom 10% can hold: a mean outside the lowest
        # `keep` so far can never be among them (every later set is a superset)
        groups = max_tokens - window + 1
        self.keep = bottom_count(groups) if groups > 0 else 0
        self.limit = self.keep + max(self.keep, 1024)


FOLD_EVERY = 1024
"""Token confidences a track buffers before it folds them into its statistics (numpy)."""


class ConfidenceTrack:
    """One live sequence's confidence so far (module docstring).

    Per token, `push` appends to a float32 buffer; every FOLD_EVERY tokens (and before any
    statistic is read) `fold` turns the buffer into the statistics with a few numpy calls:
    about 0.1 us a token all told, and no Python float per token. A sequence whose group
    confidence is tested at every position (a DeepConf stop) uses `push_tested` instead, which
    also keeps the window's running sum and returns the group mean.
    """

    __slots__ = ("shape", "pending", "recent", "n", "total", "window_sum", "lowest", "means")

    def __init__(self, shape: TrackShape) -> None:
        self.shape = shape
        self.pending = array("f")
        """Token confidences not folded yet (they follow `recent`)."""
        self.recent = array("f")
        """The last min(n, window) folded token confidences, oldest first."""
        self.n = 0
        """Tokens folded."""
        self.total = 0.0
        self.window_sum = 0.0
        """Sum of the last min(tokens, window) confidences: exact after a fold; kept token by
        token by `push_tested` only."""
        self.lowest = math.inf
        """The lowest full-window mean folded so far (inf before the first full window)."""
        self.means = array("f")
        """Candidates for the bottom 10% of full-window means (unordered)."""

    @property
    def tokens(self) -> int:
        return self.n + len(self.pending)

    def push(self, confidence: float) -> None:
        """The next token's confidence."""
        pending = self.pending
        pending.append(confidence)
        if len(pending) >= FOLD_EVERY:
            self.fold()

    def push_tested(self, confidence: float) -> float | None:
        """The next token's confidence; returns the group (last full window) mean, or None
        before the first full window, where DeepConf online does not test (its reference
        processor waits for a full window). The window sum adds each value as float32, the
        value it later subtracts: it never drifts from the buffers."""
        pending, window = self.pending, self.shape.window
        pending.append(confidence)
        total = self.n + len(pending)
        window_sum = self.window_sum + pending[-1]
        if total > window:  # the value that leaves the window, at index total - 1 - window
            k = total - 1 - window - self.n
            window_sum -= pending[k] if k >= 0 else self.recent[k]
        self.window_sum = window_sum
        if len(pending) >= FOLD_EVERY:
            self.fold()
        return window_sum / window if total >= window else None

    def fold(self) -> None:
        """Move the buffered confidences into the statistics."""
        pending = self.pending
        if not pending:
            return
        import numpy as np

        window = self.shape.window
        new = np.frombuffer(pending, dtype=np.float32).astype(np.float64)
        x = np.concatenate([np.frombuffer(self.recent, dtype=np.float32).astype(np.float64), new])
        before, after = self.n, self.n + len(new)
        self.total += float(new.sum())
        if after >= window:  # full windows ending at positions max(window - 1, before) .. after - 1
            sums = np.concatenate([[0.0], np.cumsum(x)])
            ends = np.arange(max(window - 1, before), after) - (before - len(self.recent)) + 1
            means = (sums[ends] - sums[ends - window]) / window
            self.lowest = min(self.lowest, float(means.min()))
            if self.shape.keep:
                self.means.frombytes(means.astype(np.float32).tobytes())
                if len(self.means) >= self.shape.limit:
                    self._cut()
        last = x[-window:]
        self.recent = array("f", last.astype(np.float32).tobytes())
        self.window_sum = float(last.sum())
        self.n = after
        self.pending = array("f")

    def copy(self) -> "ConfidenceTrack":
        """A fork's child: the same state at the fork position (it shares the prefix)."""
        other = ConfidenceTrack.__new__(ConfidenceTrack)
        other.shape = self.shape
        other.pending, other.recent, other.means = self.pending[:], self.recent[:], self.means[:]
        other.n, other.total, other.window_sum = self.n, self.total, self.window_sum
        other.lowest = self.lowest
        return other

    def _cut(self) -> None:
        import numpy as np

        keep = self.shape.keep
        values = np.frombuffer(self.means, dtype=np.float32)
        self.means = array("f", np.partition(values, keep - 1)[:keep].tobytes())

    def stats(self) -> ConfidenceStats | None:
        """The four confidences of the tokens so far; None before the first token."""
        self.fold()
        n, window = self.n, self.shape.window
        if n == 0:
            return None
        if n < window:
            one = self.total / n
            return ConfidenceStats(one, one, one, one)
        b = bottom_count(n - window + 1)
        if b == 1 or not self.means:
            bottom = self.lowest
        else:
            import numpy as np

            values = np.frombuffer(self.means, dtype=np.float32).astype(np.float64)
            bottom = float(np.partition(values, b - 1)[:b].mean())
        return ConfidenceStats(self.total / n, self.window_sum / window, self.lowest, bottom)


__all__ = ["BOTTOM_SHARE", "ConfidenceMeasure", "ConfidenceStats", "ConfidenceTrack",
           "TrackShape", "FOLD_EVERY", "bottom_count", "confidence_stats", "percentile"]
