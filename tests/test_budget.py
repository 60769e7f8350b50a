"""Algorithm 2 (METHOD.md section 4): golden allotments and budget invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scripting import EOS, flat, hashed_script, peaked

from eager_eval.engines.scripted import ScriptedBackend
from eager_eval.core.budget import BudgetPool, PromptState, split_evenly
from eager_eval.core.config import EagerConfig
from eager_eval.core.runner import PromptInput, run


def test_split_evenly_gives_the_remainder_to_the_first_candidates():
    assert split_evenly(7, [4, 1, 9]) == {4: 3, 1: 2, 9: 2}


def test_split_evenly_with_fewer_sequences_than_candidates():
    assert split_evenly(2, [5, 6, 7]) == {5: 1, 6: 1}


def test_split_evenly_with_no_budget():
    assert split_evenly(0, [1, 2]) == {}
    assert split_evenly(3, []) == {}


@given(st.integers(0, 200), st.lists(st.integers(0, 50), unique=True, max_size=30))
def test_split_evenly_never_exceeds_the_budget(budget, candidates):
    out = split_evenly(budget, candidates)
    assert sum(out.values()) == (min(budget, budget) if candidates else 0)
    assert all(a >= 1 for a in out.values())
    shares = [out.get(c, 0) for c in candidates]
    assert shares == sorted(shares, reverse=True)  # the first candidates never get less


# --- end to end on the scripted backend -------------------------------------------------------

def uncertain_prompts(uncertain: set[int]):
    """Prompts whose first token is in `uncertain` fork at every position; others never."""

    def script(prompt, generated):
        if len(generated) >= 4:
            return peaked(EOS)
        return flat([5, 6]) if prompt[0] in uncertain else peaked(3)

    return script


def cfg(**kw) -> EagerConfig:
    base = dict(theta=0.5, percentile=None, think_end=None, max_new_tokens=20)
    base.update(kw)
    return EagerConfig(**base)


def test_eager_adapt_reallocates_to_prompts_that_hit_the_cap():
    prompts = [PromptInput((p,)) for p in (10, 20, 30)]
    result = run(prompts, ScriptedBackend(uncertain_prompts({10})), cfg(mode="eager_adapt", max_seqs=2))
    rounds = [(r.round, r.budget, r.allotments, r.sequences_spent) for r in result.rounds]
    # round 0: 2 + 1 + 1 = 4 of 6; B = 2 goes to prompt 0 alone, which spends it; B = 0.
    assert rounds == [(0, 6, {0: 2, 1: 2, 2: 2}, 4), (1, 2, {0: 2}, 2)]
    assert [p.n_sequences for p in result.prompts] == [4, 1, 1]
    assert [t.round for t in result.prompts[0].trees] == [0, 1]


def test_eager_adapt_cap_is_adapt_cap_times_m():
    # One uncertain prompt among many certain ones: the budget is large, the cap binds.
    prompts = [PromptInput((10,))] + [PromptInput((20 + i,)) for i in range(9)]
    result = run(prompts, ScriptedBackend(uncertain_prompts({10})),
                 cfg(mode="eager_adapt", max_seqs=2, adapt_cap=3))
    # B = 20 - 11 = 9, but the prompt has room for 3 * M - 2 = 4 more only
    assert [r.allotments for r in result.rounds[1:]] == [{0: 4}]
    assert result.prompts[0].n_sequences == 6  # 3 * M


def test_eager_adapt_budget_below_candidate_count():
    # M = 3, N = 4: prompts 0-2 hit 3, prompt 3 holds 1: B = 12 - 10 = 2 < |C| = 3.
    prompts = [PromptInput((p,)) for p in (10, 11, 12, 40)]
    result = run(prompts, ScriptedBackend(uncertain_prompts({10, 11, 12})),
                 cfg(mode="eager_adapt", max_seqs=3))
    assert result.rounds[1].budget == 2
    assert result.rounds[1].allotments == {0: 1, 1: 1}
    assert len(result.rounds) == 2
    assert sum(p.n_sequences for p in result.prompts) == 12


def test_eager_adapt_with_no_budget_left_runs_no_round():
    prompts = [PromptInput((10,)), PromptInput((11,))]
    result = run(prompts, ScriptedBackend(uncertain_prompts({10, 11})), cfg(mode="eager_adapt", max_seqs=2))
    assert [r.round for r in result.rounds] == [0]


def test_eager_adapt_threshold_schedule():
    pool = BudgetPool(cfg(mode="eager_adapt", theta=2.0, max_seqs=4), n_prompts=3)
    thetas = [pool.theta_for(PromptState(0, 4, True, True, retries=r)) for r in range(4)]
    assert thetas == [2.0, 2.0, pytest.approx(1.8), pytest.approx(1.8)]


def test_full_eager_puts_capped_prompts_first_and_lowers_theta_per_retry():
    # prompt 0 hits M and is wrong; prompt 1 is solved; prompt 2 stays under M and is wrong.
    prompts = [PromptInput((10,)), PromptInput((20,)), PromptInput((30,))]
    solved = {1}
    result = run(prompts, ScriptedBackend(uncertain_prompts({10})),
                 cfg(mode="eager", max_seqs=2, theta=0.5), verifier=lambda p, text: p in solved)
    # B = 6 - 4 = 2 over C = [0 (capped), 2]: one each.
    assert result.rounds[1].allotments == {0: 1, 2: 1}
    assert [t.theta for t in result.prompts[0].trees] == [0.5, 0.5]
    assert [t.theta for t in result.prompts[2].trees] == [0.5, pytest.approx(0.4)]
    assert result.prompts[1].n_sequences == 1


def test_full_eager_retries_until_budget_spent_with_theta_lowered_each_time():
    prompts = [PromptInput((20,)), PromptInput((30,))]
    result = run(prompts, ScriptedBackend(uncertain_prompts(set())),
                 cfg(mode="eager", max_seqs=3, theta=1.0), verifier=lambda p, text: p == 0)
    thetas = [t.theta for t in result.prompts[1].trees]
    assert thetas == pytest.approx([1.0, 0.8, 0.64, 0.512, 0.4096])
    assert sum(p.n_sequences for p in result.prompts) == 6
    assert [r.allotments for r in result.rounds[1:]] == [{1: 3}, {1: 3}, {1: 2}, {1: 1}]


def test_full_eager_stops_when_every_prompt_is_solved():
    prompts = [PromptInput((10,)), PromptInput((20,))]
    result = run(prompts, ScriptedBackend(uncertain_prompts({10})),
                 cfg(mode="eager", max_seqs=4), verifier=lambda p, text: True)
    assert len(result.rounds) == 1


def test_max_rounds_bounds_reallocation():
    prompts = [PromptInput((20,)), PromptInput((30,))]
    result = run(prompts, ScriptedBackend(uncertain_prompts(set())),
                 cfg(mode="eager", max_seqs=3, max_rounds=2), verifier=lambda p, text: False)
    assert len(result.rounds) == 3


# --- invariants -------------------------------------------------------------------------------

states_strategy = st.lists(
    st.tuples(st.integers(1, 40), st.booleans(), st.booleans(), st.integers(0, 5), st.booleans()),
    min_size=1, max_size=12,
)


@given(states_strategy, st.integers(1, 8), st.sampled_from(["eager_adapt", "eager"]))
def test_allotments_respect_caps_and_budget(raw, m, mode):
    config = cfg(mode=mode, max_seqs=m)
    pool = BudgetPool(config, n_prompts=len(raw))
    states = [PromptState(i, n, a, b, r, c) for i, (n, a, b, r, c) in enumerate(raw)]
    plans = pool.plan_round(states)
    budget = pool.budget(states)
    assert sum(p.cap for p in plans) <= max(budget, 0)
    for plan in plans:
        state = states[plan.prompt_idx]
        assert 1 <= plan.cap <= pool.prompt_cap(state)
        if mode == "eager_adapt":
            assert state.n_sequences + plan.cap <= config.adapt_cap * m
        else:
            assert plan.cap <= m and not state.has_correct


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 1000),
       st.sampled_from(["eager_init", "eager_adapt", "eager"]), st.sampled_from([None, 90.0]))
def test_total_sequences_never_exceed_the_budget(m, n, salt, mode, percentile):
    prompts = [PromptInput((i + 1, salt % 7)) for i in range(n)]
    config = cfg(mode=mode, max_seqs=m, theta=0.9, percentile=percentile)
    result = run(prompts, ScriptedBackend(hashed_script(salt), greedy=False), config,
                 verifier=lambda p, text: (salt + p) % 3 == 0)
    assert result.n_sequences <= m * n
    for p in result.prompts:
        assert len(p.trees[0].sequences) <= m
        if mode == "eager_adapt":
            assert p.n_sequences <= config.adapt_cap * m
        for tree in p.trees:
            assert len(tree.sequences) <= tree.cap


def test_theta_inf_gives_exactly_one_sequence_per_prompt():
    prompts = [PromptInput((i,)) for i in range(1, 5)]
    result = run(prompts, ScriptedBackend(hashed_script(3), greedy=False),
                 cfg(mode="eager_adapt", theta=math.inf, max_seqs=4))
    assert [p.n_sequences for p in result.prompts] == [1, 1, 1, 1]
    assert len(result.rounds) == 1
