"""Pins how the `eager` provider pools a task (frontends/inspect/provider.py, inspect_samples.py):
with no flags, every sample x epoch of an eval lands in one budget pool, whatever its size.

Runs Inspect's `eval()` in-process on the scripted engine of test_inspect_provider.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from inspect_ai.model import ChatMessageUser, GenerateConfig, get_model
from test_inspect_provider import (
    SETTINGS,
    ScriptedEngine,
    core_run,
    mixed_script,
    question_task,
    run_eval,
)

from eager_eval.core.config import EagerConfig
from eager_eval.frontends.inspect import provider as provider_module
from eager_eval.frontends.inspect.provider import ADMIT_ALL, EagerModelAPI
from eager_eval.frontends.inspect.samples import call_origin

TEXTS = [f"q{i}" for i in range(70)]
"""More than the 64 calls the provider used to pool by default (and than adaptive
connections' 20-100 in flight)."""


def scripted_model(**model_args):
    return get_model("eager/scripted", engine=ScriptedEngine(mixed_script()), memoize=False,
                     **{**SETTINGS, **model_args})


def pool_sizes(log) -> Counter:
    """How many samples each pool held, e.g. Counter({70: 70}) for one pool of 70."""
    return Counter(s.output.metadata["pool"]["n_prompts"] for s in log.samples)


def test_a_task_of_70_samples_pools_in_one_run_without_flags(tmp_path):
    log = run_eval(question_task(TEXTS), scripted_model(), tmp_path)
    assert log.status == "success" and len(log.samples) == len(TEXTS)
    assert pool_sizes(log) == {len(TEXTS): len(TEXTS)}
    assert sorted(s.output.metadata["pool"]["index"] for s in log.samples) == list(range(70))

    core = core_run(TEXTS, EagerConfig(**SETTINGS, max_new_tokens=30), mixed_script())
    assert len(core.rounds) > 1  # the pool reallocated, and did so over all 70 prompts
    expected = [{"round": r.round, "budget": r.budget,
                 "allotments": {str(p): cap for p, cap in r.allotments.items()},
                 "sequences_spent": r.sequences_spent, "tokens_generated": r.tokens_generated}
                for r in core.rounds]
    assert all(s.output.metadata["pool"]["rounds"] == expected for s in log.samples)


def test_samples_times_epochs_pool_together(tmp_path):
    texts = TEXTS[:36]
    log = run_eval(question_task(texts), scripted_model(), tmp_path, epochs=2)
    assert log.status == "success" and len(log.samples) == 72
    assert pool_sizes(log) == {72: 72}


def test_the_provider_lets_every_call_in_unless_the_user_set_a_limit():
    assert scripted_model().config.max_connections == ADMIT_ALL
    model = get_model("eager/scripted", engine=ScriptedEngine(mixed_script()), memoize=False,
                      config=GenerateConfig(max_connections=5), **SETTINGS)
    assert model.config.max_connections == 5


def test_batch_size_caps_a_pool(tmp_path):
    log = run_eval(question_task(TEXTS), scripted_model(batch_size=32), tmp_path)
    assert log.status == "success"
    assert pool_sizes(log) == {32: 64, 6: 6}


def test_an_explicit_max_connections_closes_a_pool_at_what_inspect_lets_in(tmp_path):
    log = run_eval(question_task(TEXTS[:30]), scripted_model(batch_window=30), tmp_path,
                   max_connections=10)
    assert log.status == "success" and len(log.samples) == 30
    assert pool_sizes(log) == {10: 30}


def test_samples_held_back_by_max_samples_close_the_pool_after_the_window(tmp_path):
    log = run_eval(question_task(TEXTS[:20]), scripted_model(batch_window=0.3), tmp_path,
                   max_samples=8)
    assert log.status == "success" and len(log.samples) == 20
    sizes = pool_sizes(log)
    assert sum(sizes.values()) == 20 and max(sizes) <= 8


def test_a_limit_the_provider_could_not_lift_never_deadlocks_the_pool(tmp_path, monkeypatch):
    """Adaptive connections (were the provider's max_connections undone) admit ~20 calls: the
    batch holds them while the other samples wait for a connection. It runs after STALL_S."""
    monkeypatch.setattr(provider_module, "admit_every_call", lambda config: None)
    monkeypatch.setattr(provider_module.CallBatcher, "STALL_S", 0.5)
    log = run_eval(question_task(TEXTS[:30]), scripted_model(), tmp_path)
    assert log.status == "success" and len(log.samples) == 30
    assert sum(pool_sizes(log).values()) == 30


def test_calls_from_outside_an_eval_use_the_window():
    assert call_origin() is None
    api = EagerModelAPI("scripted", engine=ScriptedEngine(mixed_script()), batch_window=0.2,
                        **SETTINGS)

    async def three_calls():
        calls = [api.generate([ChatMessageUser(content=t)], [], "auto",
                              GenerateConfig(max_tokens=30)) for t in TEXTS[:3]]
        return await asyncio.gather(*calls)

    outputs = asyncio.run(three_calls())
    assert [o.metadata["pool"]["n_prompts"] for o in outputs] == [3, 3, 3]
