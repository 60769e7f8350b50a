"""Overlapping reallocation rounds give the trees of rounds run one after another (schedule.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scripting import EOS, flat, peaked
from test_runner import shape

from eager_eval.engines.scripted import ScriptedBackend
from eager_eval.core.config import EagerConfig
from eager_eval.core.controller import BranchController
from eager_eval.core.runner import PromptInput, run
from eager_eval.core.schedule import _share
from eager_eval.core.seeds import unit_uniform

THINK_END = 9
VOCAB = {THINK_END: "</think>", EOS: ""}


def reasoning_script(salt: int, eos_after: int = 14):
    """Uncertain positions before a `</think>` token (written at a position that depends on
    the branch's first tokens), peaked ones after it, EOS near the end."""

    def script(prompt, generated):
        n = len(generated)
        key = hash((salt, prompt, generated)) & ((1 << 62) - 1)
        think_at = 3 + hash((salt, prompt, generated[:2])) % 7
        if n >= eos_after + key % 4:
            return peaked(EOS)
        if n == think_at:
            return peaked(THINK_END)
        if n > think_at:
            return peaked(3 + key % 5)
        hardness = prompt[0] % 3  # prompt 0, 3: mostly uncertain; 2, 5: rarely
        if unit_uniform(key, 1) < (0.8, 0.45, 0.1)[hardness]:
            width = 3 + int(unit_uniform(key, 2) * 5)
            start = 10 + int(unit_uniform(key, 3) * 20)
            return flat(list(range(start, start + width)))
        return peaked(10 + key % 20)

    return script


PROMPTS = [PromptInput((i, 40 + i)) for i in range(6)]


def config(**kw) -> EagerConfig:
    base = dict(mode="eager_adapt", theta=0.9, max_seqs=3, percentile=None,
                think_end="</think>", max_new_tokens=24, seed=4)
    base.update(kw)
    return EagerConfig(**base)


class Recording(ScriptedBackend):
    """Records, for every add() call, which sequences were live and the roots it added."""

    def add(self, sequences):
        self.calls = [*getattr(self, "calls", []), (set(self._live), list(sequences))]
        super().add(sequences)


def engine_like(salt: int, lag: int, burst: int, shuffle: int, defer: bool, late_forks: bool):
    backend = Recording(
        reasoning_script(salt), greedy=False, vocab=VOCAB,
        start_delay=lambda i: (i * 7 + salt) % (lag + 1),
        tokens_per_step=lambda i, s: 1 + (i + s + salt) % burst,
        shuffle_seed=shuffle, defer_child_token=defer,
    )
    backend.late_forks = late_forks
    return backend


@settings(max_examples=40, deadline=None)
@given(salt=st.integers(0, 10_000), mode=st.sampled_from(["eager_adapt", "eager"]),
       lag=st.integers(0, 3), burst=st.integers(1, 3), shuffle=st.integers(0, 100),
       policy=st.sampled_from(["top2", "sample"]), percentile=st.sampled_from([None, 75.0]),
       defer=st.booleans(), late_forks=st.booleans(), max_seqs=st.integers(2, 4))
def test_overlapping_rounds_build_the_trees_of_sequential_rounds(
        salt, mode, lag, burst, shuffle, policy, percentile, defer, late_forks, max_seqs):
    c = config(mode=mode, branch_policy=policy, percentile=percentile, max_seqs=max_seqs)
    verifier = (lambda p, text: (len(text) + p) % 5 == 0) if mode == "eager" else None
    sequential = run(PROMPTS, ScriptedBackend(reasoning_script(salt), greedy=False, vocab=VOCAB),
                     c, verifier=verifier, overlap_rounds=False)
    backend = engine_like(salt, lag, burst, shuffle, defer, late_forks)
    overlapped = run(PROMPTS, backend, c, verifier=verifier)
    assert shape(overlapped) == shape(sequential)
    assert [(r.round, r.budget, r.allotments, r.sequences_spent, r.tokens_generated)
            for r in overlapped.rounds] == [
        (r.round, r.budget, r.allotments, r.sequences_spent, r.tokens_generated)
        for r in sequential.rounds]


def rounds_started_early(backend) -> int:
    """add() calls after the first that came while sequences of earlier trees were live."""
    return sum(1 for live, _ in backend.calls[1:] if live)


def test_a_round_starts_while_the_one_before_it_still_decodes():
    c = config(max_seqs=3, max_new_tokens=40)
    script = reasoning_script(7, eos_after=30)  # long answers after an early </think>
    sequential = run(PROMPTS, ScriptedBackend(script, greedy=False, vocab=VOCAB), c,
                     overlap_rounds=False)
    assert len(sequential.rounds) >= 2  # the case reallocates
    for late_forks in (False, True):
        backend = Recording(script, greedy=False, vocab=VOCAB)
        backend.late_forks = late_forks
        overlapped = run(PROMPTS, backend, c)
        assert shape(overlapped) == shape(sequential)
        assert rounds_started_early(backend) >= 1
    seq_backend = Recording(script, greedy=False, vocab=VOCAB)
    run(PROMPTS, seq_backend, c, overlap_rounds=False)
    fast = Recording(script, greedy=False, vocab=VOCAB)
    fast.late_forks = True
    run(PROMPTS, fast, c)
    assert fast.steps_taken < seq_backend.steps_taken


def test_a_retry_past_its_guaranteed_floor_waits_for_its_final_cap():
    """Two easy prompts end at once; the hard one hits its cap early, so its retry starts on
    a guaranteed floor while two slow prompts still decode (they might still become
    candidates), wants more sequences than the floor at once, and waits for its final cap."""

    def script(prompt, generated):
        n, kind = len(generated), prompt[0]
        if kind in (0, 1):  # easy
            return peaked(EOS) if n >= 2 else peaked(5)
        if kind == 2:  # hard: forks at 1, 2, 3 until its cap
            return peaked(EOS) if n >= 12 else (flat([10, 11, 12]) if n in (1, 2, 3) else peaked(6))
        return peaked(EOS) if n >= 40 else (flat([10, 11]) if n == 1 else peaked(7))  # slow

    prompts = [PromptInput((i, 1)) for i in range(5)]
    c = config(max_seqs=3, think_end=None, max_new_tokens=60, theta=0.5)
    sequential = run(prompts, ScriptedBackend(script, greedy=False), c, overlap_rounds=False)
    assert sequential.rounds[1].allotments == {2: 6}
    holds = []

    class Spy(Recording):
        late_forks = True

    backend = Spy(script, greedy=False)
    original = BranchController.decide_forks

    def spying(self, tested, observed):
        out = original(self, tested, observed)
        holds.append(out is None)
        return out

    BranchController.decide_forks = spying
    try:
        overlapped = run(prompts, backend, c)
    finally:
        BranchController.decide_forks = original
    assert shape(overlapped) == shape(sequential)
    assert any(holds)  # some retry waited for its cap
    assert rounds_started_early(backend) >= 1


@pytest.mark.parametrize("budget,size", [(10, 3), (2, 3), (7, 7), (0, 4), (31, 5)])
def test_share_is_the_even_split(budget, size):
    from eager_eval.core.budget import split_evenly

    split = split_evenly(budget, list(range(size)))
    assert [_share(budget, i, size) for i in range(size)] == [split.get(i, 0) for i in range(size)]


@settings(max_examples=200, deadline=None)
@given(budget=st.integers(0, 200), size=st.integers(1, 40), index=st.integers(0, 39),
       less=st.integers(0, 50), more=st.integers(0, 10), later=st.integers(0, 10))
def test_share_falls_with_less_budget_more_candidates_or_a_later_index(
        budget, size, index, less, more, later):
    index = min(index, size - 1)
    worst = _share(max(0, budget - less), index + later, size + more + later)
    assert worst <= _share(budget, index, size)


def test_a_floor_tree_decides_alone_only_below_its_floor():
    ctrl = BranchController(cap=None, floor=2, theta=0.5, percentile=None, window=100)
    assert ctrl.decide_forks([(0, 0.1)], [0.1]) == []  # nothing wanted: no cap needed
    assert ctrl.decide_forks([(0, math.log(3))], [math.log(3)]) is None  # would reach 2
    ctrl.set_cap(3)
    grants = ctrl.decide_forks([(0, math.log(3))], [math.log(3)])
    assert [g.seq_id for g in grants] == [0] and not ctrl.hit_cap
    with pytest.raises(ValueError, match="below the guaranteed floor"):
        BranchController(cap=None, floor=2, theta=1, percentile=None, window=9).set_cap(1)
