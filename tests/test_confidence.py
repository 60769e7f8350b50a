"""Token and sequence confidence (core/entropy.py, core/confidence.py; docs/CONFIDENCE.md)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from eager_eval.core.confidence import (
    FOLD_EVERY,
    ConfidenceMeasure,
    ConfidenceStats,
    ConfidenceTrack,
    TrackShape,
    bottom_count,
    confidence_stats,
    percentile,
)
from eager_eval.core.entropy import LOGPROB_FLOOR, topk_confidence, topk_confidences


# ---- token confidence: C = -(1/k) * sum of the k largest log-probabilities -------------------


def test_token_confidence_is_minus_the_mean_top_k_logprob():
    flat = [math.log(0.25)] * 4
    assert topk_confidence(flat) == pytest.approx(math.log(4))  # flat: low confidence
    peaked = [math.log(0.97), math.log(0.01), math.log(0.01), math.log(0.01)]
    assert topk_confidence(peaked) == pytest.approx(-(math.log(0.97) + 3 * math.log(0.01)) / 4)
    assert topk_confidence(peaked) > topk_confidence(flat)  # peaked: high confidence


def test_token_confidence_reads_the_k_largest_in_any_order():
    values = [-3.0, -0.1, -5.0, -2.0]
    assert topk_confidence(values, 2) == pytest.approx((0.1 + 2.0) / 2)
    assert topk_confidence(values, 10) == pytest.approx(10.1 / 4)  # fewer than k: all of them
    with pytest.raises(ValueError):
        topk_confidence([])


def test_masked_entries_count_at_the_floor():
    assert topk_confidence([0.0, -math.inf], 2) == pytest.approx(-LOGPROB_FLOOR / 2)


def test_batched_confidences_equal_the_scalar_per_row():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 30)) * 3
    logprobs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    rows = -np.sort(-logprobs, axis=1)  # most probable first, as backends report
    for k in (1, 5, 30, 50):
        batched = topk_confidences(rows, k)
        assert batched == pytest.approx([topk_confidence(list(r), k) for r in rows])
    rows[0, 3:] = -np.inf
    assert np.isfinite(topk_confidences(rows, 20)).all()


# ---- a sequence's four confidences -----------------------------------------------------------


def test_stats_by_hand():
    s = confidence_stats([1.0, 2.0, 3.0, 4.0, 5.0], window=2)  # groups 1.5 2.5 3.5 4.5
    assert (s.mean, s.tail, s.lowest_group, s.bottom_10) == (3.0, 4.5, 1.5, 1.5)
    s = confidence_stats(list(range(20, 0, -1)), window=1)  # 20 groups: the bottom 2
    assert (s.lowest_group, s.bottom_10, s.tail) == (1.0, 1.5, 1.0)
    short = confidence_stats([2.0, 4.0], window=8)  # shorter than a window: one group
    assert short == ConfidenceStats(3.0, 3.0, 3.0, 3.0)


def test_bottom_count_is_ten_percent_rounded_down_and_at_least_one():
    assert [bottom_count(n) for n in (1, 9, 10, 19, 20, 30721)] == [1, 1, 1, 1, 2, 3072]


def test_percentile_is_numpys_linear_interpolation():
    rng = random.Random(3)
    for n in (1, 2, 5, 16):
        values = [rng.uniform(0, 20) for _ in range(n)]
        for q in (10, 50, 90, 99.5):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def _reference(values, window):
    return confidence_stats(np.float32(values).astype(np.float64), window)


def _close(a: ConfidenceStats, b: ConfidenceStats) -> bool:
    return all(abs(a.of(m) - b.of(m)) < 1e-6 * max(1.0, abs(b.of(m))) for m in ConfidenceMeasure)


@pytest.mark.parametrize("n, window, max_tokens", [
    (1, 4, 10), (3, 4, 10), (4, 4, 10), (10, 4, 10), (100, 1, 100), (3000, 16, 3000),
    (2 * FOLD_EVERY + 7, 5, 5000), (2500, 2048, 4096), (6000, 3, 6000)])
def test_track_equals_the_whole_sequence_definition(n, window, max_tokens):
    """Incremental (folded every FOLD_EVERY tokens, bottom-10% candidates cut back) and
    tested token by token, the track gives confidence_stats of all the values."""
    rng = random.Random(n * 31 + window)
    values = [rng.uniform(0, 20) for _ in range(n)]
    lazy, tested = ConfidenceTrack(TrackShape(window, max_tokens)), ConfidenceTrack(TrackShape(window, max_tokens))
    groups = []
    for v in values:
        lazy.push(v)
        groups.append(tested.push_tested(v))
    want = _reference(values, window)
    assert _close(lazy.stats(), want) and _close(tested.stats(), want)
    full = [g for g in groups if g is not None]
    assert len(full) == max(0, n - window + 1)  # a group from the first full window on
    if full:
        assert min(full) == pytest.approx(want.lowest_group)
        assert full[-1] == pytest.approx(want.tail)


def test_bottom_ten_percent_survives_the_cut_back():
    """The candidates are cut to the lowest bottom_count(max windows) whenever the buffer
    fills: with rising values (the lowest come first) and falling ones (the lowest last)."""
    for values in (list(range(4000)), list(range(4000, 0, -1))):
        track = ConfidenceTrack(TrackShape(2, 4000))
        for v in values:
            track.push(float(v))
        assert len(track.means) < TrackShape(2, 4000).limit
        assert _close(track.stats(), _reference(values, 2))


def test_a_forked_track_continues_from_the_parents_state():
    rng = random.Random(5)
    prefix = [rng.uniform(0, 9) for _ in range(1500)]
    parent = ConfidenceTrack(TrackShape(64, 4000))
    for v in prefix:
        parent.push_tested(v)
    child = parent.copy()
    tail_a, tail_b = [rng.uniform(0, 9) for _ in range(700)], [rng.uniform(0, 9) for _ in range(300)]
    for v in tail_a:
        parent.push_tested(v)
    for v in tail_b:
        child.push(v)
    assert _close(parent.stats(), _reference(prefix + tail_a, 64))
    assert _close(child.stats(), _reference(prefix + tail_b, 64))


def test_stats_round_trip_and_an_unreadable_one_is_none():
    stats = ConfidenceStats(1.5, 2.0, 0.5, 0.75)
    assert ConfidenceStats.from_dict(stats.to_dict()) == stats
    assert ConfidenceStats.from_dict({"mean": "1.5", "tail": 2, "lowest_group": 0.5,
                                      "bottom_10": 0.75}) == stats
    assert ConfidenceStats.from_dict({"mean": 1.0}) is None
    assert ConfidenceStats.from_dict(None) is None
    assert stats.of("lowest_group") == 0.5 and stats.of(ConfidenceMeasure.TAIL) == 2.0
