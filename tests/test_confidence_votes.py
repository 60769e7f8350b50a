"""The confidence-aware votes beside Cons@k (pipeline/metrics.py, record.py; docs/CONFIDENCE.md):
the weighted vote, the top-10% / top-90% filtered weighted votes, their tie and no-answer
rules, who votes, and the record's confidences read back."""

from __future__ import annotations

import math

import pytest

from eager_eval.core.confidence import ConfidenceStats
from eager_eval.core.config import EagerConfig
from eager_eval.core.runner import PromptInput, run
from eager_eval.engines.scripted import VOCAB, ScriptedBackend, mixed_script
from eager_eval.pipeline.metrics import (
    aggregate,
    answer_classes,
    confidence_votes,
    consensus_share,
    majority_vote,
    prompt_metrics,
    score_prompt,
    score_run,
    vote,
)
from eager_eval.pipeline.record import PromptRecord, SequenceRecord, build_record


def classes(*answers):
    return answer_classes(list(answers))


def test_a_plain_vote_is_the_majority_vote():
    for answers in (["a", "b", "b"], ["a", "b", "b", "a"], [None, "x", "x", None], ["a", None, "b", None]):
        assert vote(classes(*answers), [1.0] * len(answers)) == majority_vote(answers)[1]


def test_weights_decide_and_ties_go_to_the_class_seen_first():
    c = classes("a", "b", "b")
    assert vote(c, [3.0, 1.0, 1.0]) == 0  # one confident "a" outweighs two "b"
    assert vote(c, [2.0, 1.0, 1.0]) == 0  # a tie: "a" was seen first
    assert vote(c, [1.0, 1.5, 1.0]) == 1
    assert vote(c, [None, 1.0, None]) == 1  # only voters count; the winner's first voter
    assert vote(c, [None, None, None]) is None


def test_no_answer_votes_for_none_which_can_win():
    c = classes(None, None, "7")
    assert vote(c, [1.0, 1.0, 1.5]) == 0 and c.is_none[c.of[0]]


def test_top_eta_keeps_the_most_confident_voters():
    """Top 10% of 10 voters: the confidence at the 90th percentile or above (the one most
    confident); top 90%: all but the least confident."""
    answers = ["x"] * 6 + ["y"] * 4
    confs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]  # "y" holds the top four
    got = confidence_votes(answer_classes(answers), [True] * 10, confs)
    assert got["conf_cons_at_k"] == 6  # weights: x 21, y 34
    assert got["top10_cons_at_k"] == 9  # the most confident alone: "y"
    got = confidence_votes(answer_classes(answers), [True] * 10, list(reversed(confs)))
    assert got["conf_cons_at_k"] == 0 and got["top10_cons_at_k"] == 0
    assert got["top90_cons_at_k"] == 0  # the least confident (a "y") dropped: x 45 vs y 9


def test_non_voters_are_left_out_of_every_vote():
    answers = ["x", "y", "y"]
    got = confidence_votes(answer_classes(answers), [True, False, False], [1.0, 5.0, 5.0])
    assert set(got.values()) == {0}


def test_consensus_share_leaves_the_no_answer_votes_out():
    c = classes("a", None, "a", "b")
    assert consensus_share(c, [1.0, 9.0, 2.0, 1.0]) == pytest.approx(3 / 4)
    assert consensus_share(classes(None), [1.0]) == 0.0


def test_score_prompt_votes_with_confidences_and_reports_nan_without():
    texts = ["\\boxed{7}", "\\boxed{5}", "\\boxed{5}"]
    score = score_prompt(texts, "7", "math", tokens_generated=3, tokens_in_outputs=3,
                         confidences=[9.0, 1.0, 1.0])
    assert score.cons_correct is False and score.conf_cons_correct is True
    assert score.top10_cons_correct is True
    plain = score_prompt(texts, "7", "math", tokens_generated=3, tokens_in_outputs=3)
    assert plain.conf_cons_correct is None
    assert math.isnan(prompt_metrics(plain)["conf_cons_at_k"])
    assert aggregate([score, plain]).conf_cons_at_k is None  # not all recorded: not shown
    assert aggregate([score, score]).to_dict()["conf_cons_at_k"] == 1.0


def test_stopped_sequences_do_not_vote_in_cons_at_k_either():
    texts = ["\\boxed{7}", "\\boxed{5}", "\\boxed{5}"]
    score = score_prompt(texts, "7", "math", tokens_generated=3, tokens_in_outputs=3,
                         votes=[True, False, False])
    assert score.cons_correct is True and score.correct == 1 and score.n == 3


def record_with(texts, confidences, finish=None, settings=None):
    seqs = [SequenceRecord(i, 0, None, 0, t, (finish or ["eos"] * len(texts))[i],
                           confidence=c) for i, (t, c) in enumerate(zip(texts, confidences))]
    return PromptRecord("p", 0, "q", None, None, seqs, settings=dict(settings or {}))


def test_record_votes_under_the_chosen_measure_and_round_trips():
    hi, lo = ConfidenceStats(1.0, 9.0, 1.0, 1.0), ConfidenceStats(2.0, 1.0, 2.0, 2.0)
    texts = ["\\boxed{7}", "\\boxed{5}", "\\boxed{5}"]
    record = record_with(texts, [hi, lo, lo], settings={"confidence_measure": "tail"})
    record.grade("7", "math")
    assert record.score().conf_cons_correct is True  # tail: 9 vs 1 + 1
    assert record.confidence_votes("mean")["conf_cons_at_k"] is False  # mean: 1 vs 2 + 2
    back = PromptRecord.from_dict(record.to_dict())
    assert back.sequences[0].confidence == hi and back.score() == record.score()
    old = record.to_dict()
    for seq in old["sequences"]:
        del seq["confidence"]  # an output written before confidences were recorded
    assert PromptRecord.from_dict(old).score().conf_cons_correct is None


def test_record_cons_at_k_skips_stopped_sequences():
    record = record_with(["\\boxed{7}", "\\boxed{5}", "\\boxed{5}"], [None] * 3,
                         finish=["eos", "confidence", "consensus"])
    record.grade("7", "math")
    assert record.cons_index == 0 and record.cons_correct


def test_run_scores_agree_with_the_records_of_the_same_run():
    """score_run (the core's results) and the records' score() (every front end's) count the
    confidence votes the same way."""
    prompts = [PromptInput((1, 2, 3 + i)) for i in range(6)]
    targets = [" 5", " 7", " 9", " 5", " 11", " 13"]
    config = EagerConfig(mode="full_parallel", max_seqs=5, max_new_tokens=12, think_end=None,
                         confidence_window=3, temperature=0.9)
    result = run(prompts, ScriptedBackend(mixed_script(), vocab=VOCAB, greedy=False), config)
    scores, metrics = score_run(result.prompts, targets, "math")
    records = [build_record(result, i, id=str(i), prompt="q", target=t, answer_type="math")
               for i, t in enumerate(targets)]
    assert [r.score() for r in records] == scores
    assert metrics.conf_cons_at_k is not None
