"""Trees on a fleet of workers (core/worker.py) are the trees of one backend.

In-process and fast: `SimulatedFleet` (engines/simulated_fleet.py) runs R TreeWorkers under the
real planner with the placement, commands, pickled events and lost workers of the Ray replicas
(tests/test_replicas.py runs real actors). Plus the placement's book and the KV-bounded
simulated engine the paper-scale benchmark prices.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_runner import shape
from test_schedule import PROMPTS, VOCAB, config, reasoning_script

from eager_eval.core.runner import run
from eager_eval.core.schedule import Start
from eager_eval.core.worker import Batch, CapOrder, Placement, TreeOrder, WorkersLostError
from eager_eval.engines.scripted import ScriptedBackend
from eager_eval.engines.simulated_fleet import GPUS, MODELS, SimulatedFleet, StepCost


def backend_factory(salt: int, lag: int, burst: int, late_forks: bool = True):
    def new_backend():
        backend = ScriptedBackend(
            reasoning_script(salt), greedy=False, vocab=VOCAB,
            start_delay=lambda i: (i * 7 + salt) % (lag + 1),
            tokens_per_step=lambda i, s: 1 + (i + s + salt) % burst)
        backend.late_forks = late_forks
        return backend

    return new_backend


@settings(max_examples=30, deadline=None)
@given(salt=st.integers(0, 10_000), mode=st.sampled_from(["full_parallel", "eager_adapt", "eager"]),
       replicas=st.integers(1, 4), lag=st.integers(0, 2), burst=st.integers(1, 3),
       lose=st.sampled_from([None, 0, 1]), at=st.integers(0, 30),
       late_forks=st.booleans(), policy=st.sampled_from(["top2", "sample"]))
def test_any_number_of_workers_and_a_lost_one_give_the_trees_of_one_backend(
        salt, mode, replicas, lag, burst, lose, at, late_forks, policy):
    cfg = config(mode=mode, branch_policy=policy)
    verifier = (lambda p, text: (p + len(text)) % 3 == 0) if mode == "eager" else None
    new_backend = backend_factory(salt, lag, burst, late_forks)
    expected = shape(run(PROMPTS, new_backend(), cfg, verifier=verifier))
    losing = {lose: float(at)} if lose is not None and lose < replicas - 1 else None
    fleet = SimulatedFleet(new_backend, replicas, cfg, lose=losing)
    assert shape(run(PROMPTS, fleet, cfg, verifier=verifier)) == expected


@pytest.mark.parametrize("mode", ["full_parallel", "eager_adapt", "eager"])
def test_a_worker_lost_mid_run_has_its_trees_run_again_with_the_same_result(mode):
    cfg = config(mode=mode)
    verifier = (lambda p, text: (p + len(text)) % 3 == 0) if mode == "eager" else None
    new_backend = backend_factory(11, 1, 2)
    expected = shape(run(PROMPTS, new_backend(), cfg, verifier=verifier))
    fleet = SimulatedFleet(new_backend, 3, cfg, lose={1: 5.0})
    assert shape(run(PROMPTS, fleet, cfg, verifier=verifier)) == expected
    assert fleet.placement.restarted and 1 not in fleet.placement.alive


def test_losing_every_worker_is_one_clear_error_naming_the_resume():
    cfg = config()
    fleet = SimulatedFleet(backend_factory(3, 0, 1), 2, cfg, lose={0: 2.0, 1: 3.0})
    with pytest.raises(WorkersLostError, match="every replica is gone.*--resume"):
        run(PROMPTS, fleet, cfg)


def test_a_lost_worker_s_trees_start_again_elsewhere_with_their_final_caps():
    def order(p, r, cap=None, floor=2, upper=4):
        return TreeOrder(Start(p, r, 1.0, cap, floor, upper))

    book = Placement(3)
    book.start([order(0, 0, 4, 4), order(1, 0, 4, 4), order(2, 0, 4, 4)])
    assert [book.where[(p, 0)] for p in range(3)] == [0, 1, 2]  # least loaded, lowest index
    for w in range(3):
        book.take(w)
        book.received(w, Batch([], 0, live=w, idle=False))  # worker w has w live rows
    book.start([order(3, 1)])
    assert book.where[(3, 1)] == 0
    book.set_cap(CapOrder(3, 1, 3))
    assert book.take(0) == [order(3, 1), CapOrder(3, 1, 3)]
    assert book.lose(0) == [(0, 0), (3, 1)]
    assert book.where[(0, 0)] == 1 and book.where[(3, 1)] == 2  # 1 had 1 row, then 2 had 2 < 1+4
    assert book.take(2)[-1] == CapOrder(3, 1, 3), "the final cap follows the restarted tree"
    book.lose(1)
    with pytest.raises(WorkersLostError):
        book.lose(2)


def test_a_worker_reports_a_tree_only_when_its_state_changes():
    from eager_eval.core.worker import TreeWorker

    cfg = config(mode="eager_init")
    worker = TreeWorker(backend_factory(5, 0, 1)(), cfg, PROMPTS)
    batch = worker.advance([TreeOrder(Start(p, 0, cfg.theta, 3, 3, 3)) for p in range(3)])
    assert {s.key for s in batch.states} == {(0, 0), (1, 0), (2, 0)}  # new trees, once each
    reports, steps = 0, 0
    while worker._trees:
        batch = worker.advance()
        reports += len(batch.states)
        steps += 1
    assert worker.tokens_reported > 3 * reports, "far fewer reports than tokens"
    done = [s for s in batch.states if s.result is not None]
    assert done and all(s.done and s.settled for s in done)


# --- the simulated engine's KV cache and the step-cost model ------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from golden_runs import WordTokenizer

    return WordTokenizer()


@pytest.mark.parametrize("mode", ["full_parallel", "eager_adapt", "eager"])
def test_a_bounded_kv_cache_preempts_and_changes_no_tree(tokenizer, mode):
    from eager_eval.core.config import EagerConfig
    from eager_eval.core.tree import PromptInput
    from eager_eval.engines.simulated import SimulatedBackend, TraceProfile

    profile = TraceProfile(length=120, high_entropy_rate=(0.08, 0.03, 0.005))
    cfg = EagerConfig(mode=mode, theta=2.0, max_seqs=6, max_new_tokens=120, seed=5,
                      think_end="</think>")
    prompts = [PromptInput((7, 8, 9, 100 + i), stop=(profile.stop,)) for i in range(6)]
    verifier = (lambda p, text: p % 2 == 1 and len(text) % 4 == 0) if mode == "eager" else None
    free = SimulatedBackend(tokenizer, profile, logprobs=cfg.is_branching, shapes=64)
    bounded = SimulatedBackend(tokenizer, profile, logprobs=cfg.is_branching, shapes=64,
                               kv_capacity=700)
    assert shape(run(prompts, bounded, cfg, verifier=verifier)) == shape(
        run(prompts, free, cfg, verifier=verifier))
    assert bounded.preemptions > 0 and bounded.steps_taken >= free.steps_taken
    assert bounded.kv_used == 0, "every tree's KV was given back"


def test_the_roofline_of_an_8b_model_on_an_h100():
    from eager_eval.engines.simulated import StepLoad

    cost = StepCost(GPUS["h100"], MODELS["8b"])
    assert MODELS["8b"].kv_bytes_per_token == 2 * 36 * 8 * 128 * 2
    weights_only = cost.seconds(StepLoad(rows=1))
    assert weights_only == pytest.approx(8.19e9 * 2 / 3.35e12)
    assert cost.seconds(StepLoad(rows=64, context=64 * 1000)) > weights_only  # KV reads add up
    assert cost.seconds(StepLoad(rows=1, prefill=100_000)) == pytest.approx(
        2 * 8.19e9 * 100_001 / 989e12)  # prefill is compute-bound
    assert 300_000 < cost.kv_capacity < 400_000
