"""Pins eager_eval/pipeline/metrics.py (METHOD.md sections 5 and 8); expected values worked by hand."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eager_eval.pipeline.answers import AnswerType
from eager_eval.pipeline.metrics import (
    PromptScore,
    TaskMetrics,
    aggregate,
    majority_vote,
    score_prompt,
    token_savings,
    unbiased_pass_at_k,
)

# ---------------------------------------------------------------------------------------------
# Unbiased pass@k
# ---------------------------------------------------------------------------------------------


def test_pass_at_k_hand_values():
    assert unbiased_pass_at_k(4, 1, 1) == pytest.approx(0.25)  # c/n
    assert unbiased_pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert unbiased_pass_at_k(5, 2, 3) == pytest.approx(0.9)  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert unbiased_pass_at_k(4, 0, 2) == 0.0
    assert unbiased_pass_at_k(4, 3, 2) == 1.0  # only one wrong: every pair holds a right one


@pytest.mark.parametrize(("n", "c", "k"), [(4, 1, 5), (4, 1, 0), (0, 0, 1), (4, 5, 2), (4, -1, 2)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match=r"must be in \[") as err:
        unbiased_pass_at_k(n, c, k)
    assert f"n={n}" in str(err.value)


def test_pass_at_k_matches_enumeration_of_subsets():
    # the estimator's meaning: share of k-subsets of the n samples that contain a correct one
    for n in range(1, 7):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                share = sum(any(s) for s in subsets) / len(subsets)
                assert unbiased_pass_at_k(n, c, k) == pytest.approx(share)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 200).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))
    )
)
def test_pass_at_k_bounded_and_monotone(nck):
    n, c, k = nck
    value = unbiased_pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    if c < n:
        assert unbiased_pass_at_k(n, c + 1, k) >= value
    if k < n:
        assert unbiased_pass_at_k(n, c, k + 1) >= value


# ---------------------------------------------------------------------------------------------
# Majority vote (Cons@k)
# ---------------------------------------------------------------------------------------------


def test_vote_most_votes_wins():
    assert majority_vote(["a", "b", "b"]) == ("b", 1)


def test_vote_tie_goes_to_first_seen():
    assert majority_vote(["a", "b", "b", "a"]) == ("a", 0)
    assert majority_vote(["b", "a", "a", "b"]) == ("b", 0)


def test_vote_none_is_its_own_bucket_and_can_win_a_tie():
    assert majority_vote([None, "x", "x", None]) == (None, 0)
    assert majority_vote(["x", None, None, "x"]) == ("x", 0)
    assert majority_vote(["a", None, "b", None]) == (None, 1)


def test_vote_empty():
    assert majority_vote([]) == (None, -1)


def test_vote_groups_with_custom_sameness_against_first_member():
    same = lambda a, b: a.lower() == b.lower()  # noqa: E731
    assert majority_vote(["b", "A", "a", "B", "a"], same) == ("A", 1)


def test_cons_tie_first_seen_wins_even_when_wrong():
    # 5, 7, 7, 5 against gold 7: 2 votes each, "5" was seen first, so the vote is wrong
    texts = [r"\boxed{5}", r"\boxed{7}", r"\boxed{7}", r"\boxed{5}"]
    score = score_prompt(texts, "7", AnswerType.MATH, tokens_generated=10, tokens_in_outputs=12)
    assert score.correct == 2
    assert not score.cons_correct


def test_cons_none_winning_is_never_correct():
    texts = ["I do not know", r"\boxed{9}"]
    score = score_prompt(texts, "9", AnswerType.MATH, tokens_generated=5, tokens_in_outputs=5)
    assert score.answers == (None, "9")
    assert score.correct == 1
    assert not score.cons_correct


def test_cons_groups_equivalent_math_answers():
    # 0.5 and 1/2 are one answer (2 votes) and beat 3 (1 vote), which came first
    texts = [r"\boxed{3}", r"\boxed{0.5}", "so the answer is 1/2"]
    score = score_prompt(texts, r"\frac{1}{2}", "math", tokens_generated=9, tokens_in_outputs=9)
    assert score.answers == ("3", "0.5", "1/2")
    assert score.correct == 2
    assert score.cons_correct


def test_score_prompt_choice():
    texts = ["The answer is (B).", r"\boxed{C}", "ANSWER: B", "The answer is E"]
    score = score_prompt(texts, "B", AnswerType.CHOICE, tokens_generated=7, tokens_in_outputs=8)
    assert score.answers == ("B", "C", "B", None)
    assert (score.n, score.correct, score.cons_correct) == (4, 2, True)
    assert (score.tokens_generated, score.tokens_in_outputs) == (7, 8)


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


def _three_prompts() -> list[PromptScore]:
    return [
        # answers 0.5, 1/2, 3, none against 1/2: c = 2; {0.5, 1/2} wins the vote with 2
        score_prompt(
            [r"\boxed{0.5}", "the answer is 1/2", r"\boxed{3}", "no idea"],
            r"\frac{1}{2}",
            AnswerType.MATH,
            tokens_generated=100,
            tokens_in_outputs=160,
        ),
        # 5, 7, 7, 5 against 7: c = 2; tie, 5 seen first: vote wrong
        score_prompt(
            [r"\boxed{5}", r"\boxed{7}", r"\boxed{7}", r"\boxed{5}"],
            "7",
            AnswerType.MATH,
            tokens_generated=50,
            tokens_in_outputs=80,
        ),
        # none, 4 against 9: c = 0; tie, none seen first: vote wrong
        score_prompt(
            ["blah", r"\boxed{4}"],
            "9",
            AnswerType.MATH,
            tokens_generated=30,
            tokens_in_outputs=40,
        ),
    ]


def test_aggregate_every_field_by_hand():
    scores = _three_prompts()
    summary = [(s.n, s.correct, s.cons_correct) for s in scores]
    assert summary == [(4, 2, True), (4, 2, False), (2, 0, False)]

    m = aggregate(scores, ks=(1, 2, 4, 8))
    assert m.n_prompts == 3
    assert m.pass_at_k == pytest.approx(2 / 3)  # prompts 1 and 2 have a correct sequence
    assert m.pass_rate == pytest.approx((2 / 4 + 2 / 4 + 0 / 2) / 3)
    assert m.pass_at_1 == pytest.approx(1 / 3)
    assert m.cons_at_k == pytest.approx(1 / 3)
    # pass@2: 1 - C(2,2)/C(4,2) = 5/6 for prompts 1 and 2, 0 for prompt 3
    assert m.pass_at[1] == pytest.approx(1 / 3)
    assert m.pass_at[2] == pytest.approx((5 / 6 + 5 / 6 + 0) / 3)
    # pass@4: only prompts 1 and 2 have n >= 4; n - c = 2 < 4, so each is 1
    assert m.pass_at[4] == pytest.approx(1.0)
    assert math.isnan(m.pass_at[8])
    assert m.pass_at_support == {1: 3, 2: 3, 4: 2, 8: 0}
    assert m.tokens_generated == 100 + 50 + 30
    assert m.tokens_in_outputs == 160 + 80 + 40
    assert m.seqs_mean == pytest.approx(10 / 3)
    assert (m.seqs_min, m.seqs_max) == (2, 4)


def test_to_dict_is_flat_with_exact_keys():
    flat = aggregate(_three_prompts(), ks=(2, 8)).to_dict()
    assert set(flat) == {
        "n_prompts", "pass_at_k", "pass_at_1", "cons_at_k", "pass_rate", "tokens_generated",
        "tokens_in_outputs", "seqs_mean", "seqs_min", "seqs_max", "pass@2", "pass@8",
        "conf_cons_at_k", "top10_cons_at_k", "top90_cons_at_k",
    }  # fmt: skip
    assert flat["conf_cons_at_k"] is None  # no prompt recorded a confidence
    assert flat["pass@2"] == pytest.approx(5 / 9)
    assert flat["pass@8"] is None  # no prompt has 8 sequences: JSON null, not NaN


def test_prompt_without_sequences_counts_as_wrong():
    empty = PromptScore(n=0, correct=0, cons_correct=False, tokens_generated=0, tokens_in_outputs=0)
    full = PromptScore(n=2, correct=2, cons_correct=True, tokens_generated=8, tokens_in_outputs=8)
    m = aggregate([empty, full], ks=(1,))
    assert m.pass_at_k == pytest.approx(0.5)
    assert m.pass_rate == pytest.approx(0.5)  # (0 + 1) / 2
    assert m.cons_at_k == pytest.approx(0.5)
    assert m.pass_at[1] == pytest.approx(1.0)  # n >= 1 only: the empty prompt does not qualify
    assert m.pass_at_support == {1: 1}
    assert (m.seqs_min, m.seqs_max, m.seqs_mean) == (0, 2, 1.0)


def test_aggregate_rejects_empty_and_bad_k():
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])
    with pytest.raises(ValueError, match="k in ks"):
        aggregate(_three_prompts()[:1], ks=(0,))


def test_prompt_score_validates_counts():
    with pytest.raises(ValueError, match="correct"):
        PromptScore(n=2, correct=3, cons_correct=True, tokens_generated=1, tokens_in_outputs=1)
    with pytest.raises(ValueError, match="answers"):
        PromptScore(
            n=2, correct=0, cons_correct=False, tokens_generated=1, tokens_in_outputs=1,
            answers=("1",),
        )  # fmt: skip


def test_task_metrics_is_frozen():
    m = aggregate(_three_prompts())
    assert isinstance(m, TaskMetrics)
    with pytest.raises(AttributeError):
        m.n_prompts = 4  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Savings
# ---------------------------------------------------------------------------------------------


def test_token_savings():
    assert token_savings(25, 100) == pytest.approx(0.75)
    assert token_savings(100, 100) == pytest.approx(0.0)
    assert token_savings(150, 100) == pytest.approx(-0.5)  # costlier than the baseline
    with pytest.raises(ValueError, match="baseline_tokens"):
        token_savings(10, 0)
