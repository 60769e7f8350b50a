"""The one per-prompt record (eager_eval/pipeline/record.py, docs/FORMAT.md): built from a run, graded
once, counted from its flags, written and read back the same, older shapes still read."""

from __future__ import annotations

import json
import math

import pytest
from scripting import hashed_script

from eager_eval.engines.scripted import ScriptedBackend
from eager_eval.core.config import EagerConfig
from eager_eval.pipeline.metrics import score_prompt
from eager_eval.pipeline.record import RECORD_FORMAT, RECORD_VERSION, PromptRecord, build_record
from eager_eval.core.runner import PromptInput, run

VOCAB = {0: "", **{t: f" {t}" for t in range(1, 40)}}


@pytest.fixture(scope="module")
def result():
    config = EagerConfig(mode="eager_adapt", theta=0.9, max_seqs=3, percentile=None, seed=2,
                         max_new_tokens=10, think_end=None)
    prompts = [PromptInput((10 + i, 20 + i)) for i in range(3)]
    return run(prompts, ScriptedBackend(hashed_script(3, eos_after=6), vocab=VOCAB), config)


def decode(ids):
    return "".join(VOCAB.get(t, "?") for t in ids)


def test_the_record_holds_the_run_and_derives_its_counts(result):
    record = build_record(result, 1, id="p1", prompt="(made up)", decode=decode)
    prompt = result.prompts[1]
    assert (record.format, record.version) == (RECORD_FORMAT, RECORD_VERSION)
    assert [s.tokens for s in record.sequences] == [s.tokens for s in prompt.sequences]
    assert [(f.round, f.position, f.child) for f in record.forks] == [
        (t.round, e.position, e.child) for t in prompt.trees for e in t.branch_events]
    assert record.tokens_generated == prompt.tokens_generated  # derived, never stored
    assert record.tokens_in_outputs == prompt.tokens_in_outputs
    assert record.pool.budget == 3 * 3 and record.pool.index == 1
    assert [r.round for r in record.pool.rounds] == [r.round for r in result.rounds]
    assert all(f.context is not None for f in record.forks)
    assert not record.is_graded and record.n_correct is None
    with pytest.raises(ValueError, match="not graded"):
        record.score()


def test_graded_once_and_counted_from_the_flags(result):
    record = build_record(result, 0, id="p0", prompt="q", target="5", answer_type="math")
    expected = score_prompt(record.texts, "5", "math", tokens_generated=0, tokens_in_outputs=0)
    score = record.score()
    assert score.correct == expected.correct and score.cons_correct == expected.cons_correct
    assert [s.answer for s in record.sequences] == list(expected.answers)
    # the flags are the truth: change one and the count follows, with no grading
    record.sequences[0].correct = not record.sequences[0].correct
    assert record.score().correct == expected.correct + (1 if record.sequences[0].correct else -1)


def test_written_and_read_back_the_same(result):
    record = build_record(result, 2, id="p2", prompt="q", target="7", answer_type="math",
                          decode=decode, versions={"eager_eval": "x"}, origin={"doc_id": 2})
    data = json.loads(json.dumps(record.to_dict()))
    assert list(data)[:2] == ["format", "version"]
    assert PromptRecord.from_dict(data).to_dict() == data
    data["settings"]["theta"] = math.inf
    assert json.loads(json.dumps(PromptRecord.from_dict(data).to_dict()))["settings"]["theta"] == "inf"


def test_a_newer_version_is_refused_with_what_this_one_reads(result):
    data = build_record(result, 0, id="p", prompt="q").to_dict()
    data["version"] = RECORD_VERSION + 1
    with pytest.raises(ValueError, match=f"version {RECORD_VERSION + 1}.*reads {RECORD_VERSION}"):
        PromptRecord.from_dict(data)
    with pytest.raises(ValueError, match="not an eager-eval prompt record"):
        PromptRecord.from_dict({"text": "x"})


def test_the_cli_s_older_lines_still_read():
    line = {"prompt_idx": 4, "id": "p4", "problem": "q", "target": "3", "correct": [False, True],
            "answers": ["2", "3"], "cons_correct": False,
            "sequences": [{"index": 0, "round": 0, "parent": None, "fork_position": 0,
                           "n_tokens": 5, "text": "a"},
                          {"index": 1, "round": 0, "parent": 0, "fork_position": 2,
                           "n_tokens": 5, "text": "b"}],
            "branch_events": [{"position": 2, "parent": 0, "child": 1, "entropy": 1.5,
                               "threshold": 1.0}]}
    record = PromptRecord.from_dict(line)
    assert (record.version, record.index, record.id, record.prompt) == (1, 4, "p4", "q")
    assert record.tokens_generated == 5 + 3 and record.n_correct == 1
    assert record.cons_correct is False and record.forks[0].round == 0
