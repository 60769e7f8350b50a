"""Golden tests of Algorithm 1 (METHOD.md sections 3 and 8) on the scripted backend.

Each test scripts the distributions position by position and asserts the exact tree: fork
positions, tokens, thresholds and sequence counts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scripting import EOS, flat, peaked

from eager_eval.engines.scripted import ScriptedBackend
from eager_eval.core.config import EagerConfig
from eager_eval.core.controller import BranchController
from eager_eval.core.runner import PromptInput, run

PROMPT = PromptInput((7, 7))


def cfg(**kw) -> EagerConfig:
    base = dict(mode="eager_init", theta=1.0, max_seqs=4, percentile=None, think_end=None,
                max_new_tokens=40, window=1000)
    base.update(kw)
    return EagerConfig(**base)


def tree_of(script, config, prompts=(PROMPT,), **backend_kw):
    backend = ScriptedBackend(script, **backend_kw)
    result = run(list(prompts), backend, config)
    return result, backend


def by_position(table: dict[int, object], default, end: int):
    """Script from position alone: table[position] or default; EOS at `end`."""

    def script(prompt, generated):
        n = len(generated)
        if n >= end:
            return peaked(EOS)
        return table.get(n, default)

    return script


def test_fixed_threshold_forks_where_entropy_exceeds_theta():
    script = by_position({2: flat([5, 6, 7, 8])}, peaked(3), end=6)
    result, backend = tree_of(script, cfg(theta=1.0))
    seqs = result.prompts[0].sequences
    assert [s.tokens for s in seqs] == [[3, 3, 5, 3, 3, 3, 0], [3, 3, 6, 3, 3, 3, 0]]
    assert [(s.index, s.parent, s.fork_position) for s in seqs] == [(0, None, 0), (1, 0, 2)]
    (event,) = result.prompts[0].branch_events
    assert (event.position, event.parent, event.child) == (2, 0, 1)
    assert event.entropy == pytest.approx(math.log(4))
    assert event.threshold == 1.0
    assert (event.parent_token, event.child_token) == (5, 6)


def test_entropy_equal_to_theta_does_not_fork():
    script = by_position({2: flat([5, 6])}, peaked(3), end=6)
    result, _ = tree_of(script, cfg(theta=math.log(2)))
    assert result.prompts[0].n_sequences == 1


def test_dynamic_threshold_uses_only_earlier_positions():
    # position 0: ln4 (forks: no history, tau = theta); position 1: ln2 on both sequences.
    # Fixed theta 0.5 lets both fork at 1; the dynamic median of {ln4} blocks them.
    script = by_position({0: flat([5, 6, 7, 8]), 1: flat([9, 10]), 2: flat([11, 12, 13])},
                         peaked(3), end=5)
    fixed, _ = tree_of(script, cfg(theta=0.5, max_seqs=8))
    assert [(e.position, e.parent, e.child) for e in fixed.prompts[0].branch_events] == [
        (0, 0, 1), (1, 0, 2), (1, 1, 3), (2, 0, 4), (2, 1, 5), (2, 2, 6), (2, 3, 7)]

    dynamic, _ = tree_of(script, cfg(theta=0.5, max_seqs=8, percentile=50))
    events = dynamic.prompts[0].branch_events
    # tau at 2 = median of every entropy recorded at positions 0 and 1 (one at 0, two at 1)
    tau2 = float(np.percentile([math.log(4), math.log(2), math.log(2)], 50))
    assert tau2 == pytest.approx(math.log(2))
    assert [(e.position, e.parent, e.child) for e in events] == [(0, 0, 1), (2, 0, 2), (2, 1, 3)]
    assert events[0].threshold == 0.5
    assert events[1].threshold == pytest.approx(tau2)
    assert all(e.entropy == pytest.approx(math.log(3)) for e in events[1:])


def test_threshold_percentile_matches_numpy_linear():
    ctrl = BranchController(cap=100, theta=0.1, percentile=99, window=1000)
    rng = np.random.default_rng(0)
    seen: list[float] = []
    for _ in range(30):
        values = rng.uniform(0, 3, size=3).tolist()
        expected = 0.1 if not seen else max(0.1, float(np.percentile(seen, 99)))
        assert ctrl.threshold() == pytest.approx(expected)
        ctrl.decide_forks([], values)
        seen += values


def test_cap_counts_finished_sequences():
    # Seq 0 forks at 0 (child 1 takes token 6 and ends at once), forks again at 2 (child 2);
    # at 3 it would fork once more, but 3 sequences exist, finished child included.
    def script(prompt, generated):
        n = len(generated)
        if generated[:1] == (6,):
            return peaked(EOS)
        if n in (0, 2, 3):
            return flat([5, 6, 7, 8])
        return peaked(EOS) if n >= 5 else peaked(3)

    result, _ = tree_of(script, cfg(max_seqs=3))
    seqs = result.prompts[0].sequences
    assert len(seqs) == 3
    assert [e.position for e in result.prompts[0].branch_events] == [0, 2]
    assert seqs[1].tokens == [6, 0]
    assert seqs[1].finish_reason.value == "eos"


def test_cap_is_reachable_and_forks_granted_in_creation_order():
    # After the fork at 0, both sequences want to fork at 1 but only one more fits under
    # M = 3: the earlier-created sequence (0) gets it.
    script = by_position({0: flat([5, 6]), 1: flat([7, 8, 9])}, peaked(3), end=4)
    result, _ = tree_of(script, cfg(max_seqs=3, theta=0.5))
    events = result.prompts[0].branch_events
    assert [(e.position, e.parent, e.child) for e in events] == [(0, 0, 1), (1, 0, 2)]
    assert result.prompts[0].n_sequences == 3


def test_no_branching_after_think_end():
    vocab = {9: "</think>", 3: "a", 5: "b", 6: "c", 0: ""}
    script = by_position({1: peaked(9), 3: flat([5, 6])}, peaked(3), end=6)
    thinking, _ = tree_of(script, cfg(think_end="</think>", theta=0.5), vocab=vocab)
    assert thinking.prompts[0].n_sequences == 1
    plain, _ = tree_of(script, cfg(think_end=None, theta=0.5), vocab=vocab)
    assert [e.position for e in plain.prompts[0].branch_events] == [3]


def test_think_end_does_not_block_forks_before_it():
    vocab = {9: "</think>", 3: "a", 5: "b", 6: "c", 0: ""}
    script = by_position({1: flat([5, 6]), 3: peaked(9), 4: flat([5, 6])}, peaked(3), end=7)
    result, _ = tree_of(script, cfg(think_end="</think>", theta=0.5), vocab=vocab)
    assert [(e.position, e.parent) for e in result.prompts[0].branch_events] == [(1, 0)]


def test_window_stops_branching_and_active_sequences_finish():
    script = by_position({0: flat([5, 6]), 6: flat([7, 8])}, peaked(3), end=9)
    narrow, _ = tree_of(script, cfg(window=3, theta=0.5))
    seqs = narrow.prompts[0].sequences
    # fork at 0; positions 1, 2, 3 without a fork close the window before position 6
    assert [e.position for e in narrow.prompts[0].branch_events] == [0]
    assert all(s.finish_reason.value == "eos" and len(s.tokens) == 10 for s in seqs)
    wide, _ = tree_of(script, cfg(window=10, theta=0.5))
    assert [e.position for e in wide.prompts[0].branch_events] == [0, 6, 6]


def test_children_fork_again():
    # Only the path through token 6 (the child's rank-2 token at 1) is uncertain at 3.
    def script(prompt, generated):
        n = len(generated)
        if n >= 6:
            return peaked(EOS)
        if n == 1:
            return flat([5, 6])
        if n == 3 and generated[1] == 6:
            return flat([11, 12, 13])
        return peaked(3)

    result, _ = tree_of(script, cfg(theta=0.5))
    seqs = result.prompts[0].sequences
    assert [(s.index, s.parent, s.fork_position) for s in seqs] == [(0, None, 0), (1, 0, 1), (2, 1, 3)]
    assert seqs[2].tokens[:4] == [3, 6, 3, 12]
    assert seqs[1].tokens[:4] == [3, 6, 3, 11]


def test_sequence_ending_at_a_position_is_not_tested_there():
    # At position 2 the sampled token is EOS but the distribution is flat: no fork.
    script = by_position({2: [(EOS, math.log(0.5)), (5, math.log(0.5))]}, peaked(3), end=99)
    result, _ = tree_of(script, cfg(theta=0.5))
    assert result.prompts[0].n_sequences == 1
    assert result.prompts[0].sequences[0].tokens == [3, 3, 0]


def test_length_limit_ends_sequences():
    script = by_position({}, peaked(3), end=999)
    result, _ = tree_of(script, cfg(max_new_tokens=5))
    (seq,) = result.prompts[0].sequences
    assert len(seq.tokens) == 5 and seq.finish_reason.value == "length"


def test_sample_policy_parent_keeps_its_token_child_samples_its_own():
    script = by_position({1: flat(list(range(10, 30)))}, peaked(3), end=4)
    result, backend = tree_of(script, cfg(theta=0.5, branch_policy="sample"), greedy=False)
    seqs = result.prompts[0].sequences
    assert len(seqs) == 2
    fork = backend.forks[0]
    assert fork.child_token is None
    # the parent's token is what it sampled; the child's is drawn with its own seed
    assert fork.parent_token == seqs[0].tokens[1]
    assert seqs[1].tokens[1] == result.prompts[0].branch_events[0].child_token
    assert seqs[0].seed != seqs[1].seed


def test_stop_string_ends_a_sequence_outside_thinking_only():
    vocab = {3: "x", 4: "STOP", 8: "<think>", 9: "</think>", 0: ""}
    # thinking opens at 0, STOP inside thinking at 2 is ignored, thinking closes at 3,
    # STOP at 5 ends the sequence and is cut from the text.
    table = {0: peaked(8), 2: peaked(4), 3: peaked(9), 5: peaked(4)}
    script = by_position(table, peaked(3), end=10)
    prompt = PromptInput((7,), stop=("STOP",))
    result, _ = tree_of(script, cfg(think_end="</think>"), prompts=[prompt], vocab=vocab)
    (seq,) = result.prompts[0].sequences
    assert seq.finish_reason.value == "stop"
    assert len(seq.tokens) == 6
    assert seq.text == "<think>xSTOP</think>x"


@pytest.mark.parametrize("knows_bytes", [True, False])
def test_thinking_and_stop_checks_decode_at_most_once_per_token(knows_bytes):
    """With its tokens' bytes (`token_pieces`) the runner never decodes per token; without,
    one decoded tail serves both checks."""
    calls = []

    class Counting(ScriptedBackend):
        def decode(self, token_ids):
            calls.append(len(token_ids))
            return super().decode(token_ids)

    script = by_position({}, peaked(3), end=5)
    prompt = PromptInput((7,), stop=("STOP",))
    backend = Counting(script, vocab={3: "x", 0: ""})
    if not knows_bytes:
        backend.token_pieces = None
    result = run([prompt], backend, cfg(think_end="</think>"))
    (seq,) = result.prompts[0].sequences
    assert len(seq.tokens) == 6
    per_token = len(seq.tokens) if not knows_bytes else 0
    assert len(calls) == per_token + 1  # and one for the final text


def test_margin_is_the_closest_an_entropy_test_came_to_its_threshold():
    controller = BranchController(cap=4, theta=1.0, percentile=None, window=100)
    assert controller.margin == math.inf  # nothing tested yet
    controller.decide_forks([(0, 0.75)], [0.75])  # all below theta: theta - entropy
    assert controller.margin == 0.25
    controller.decide_forks([(0, 1.125), (1, 0.875)], [1.125, 0.875])  # tau read: |e - tau|
    assert controller.margin == 0.125
    controller.decide_forks([(0, 1.5)], [1.5])  # farther: the closest stays
    assert controller.margin == 0.125


def test_margin_skips_a_decision_left_for_the_final_cap():
    controller = BranchController(cap=None, floor=1, theta=1.0, percentile=None, window=100)
    assert controller.decide_forks([(0, 1.0001)], [1.0001]) is None  # needs the cap: undecided
    assert controller.margin == math.inf
    controller.set_cap(2)
    controller.decide_forks([(0, 1.0001)], [1.0001])
    assert controller.margin == pytest.approx(1e-4)


def test_a_tree_and_its_record_carry_the_margin():
    from eager_eval.pipeline.record import PromptRecord, build_record

    entropies = {2: flat(list(range(1, 6))), 5: flat([1, 2])}  # ln 5 and ln 2 against theta 1
    result, _ = tree_of(by_position(entropies, peaked(3), 9), cfg())
    (tree,) = result.prompts[0].trees
    assert len(tree.branch_events) == 1  # ln 5 forked; ln 2 (0.307 below theta) is the closest
    assert tree.margin == pytest.approx(1.0 - math.log(2), rel=1e-6)
    record = build_record(result, 0, id="p", prompt="p")
    assert record.trees[0].margin == tree.margin
    assert PromptRecord.from_dict(record.to_dict()).trees[0].margin == tree.margin
    assert type(tree).from_dict(tree.to_dict()).margin == tree.margin
