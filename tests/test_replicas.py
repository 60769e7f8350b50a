"""Engine replicas on Ray (engines/replicas.py, docs/SCALE.md): one budget pool over N engines.

With real Ray actors on this CPU: the trees, seeds and every metric are the same for 1, 2 and
3 replicas; a replica killed with SIGKILL mid-run loses nothing (its unfinished trees run again
on the others); when every replica is gone the run stops with one clear error and the same run
again resumes from the stored trees. One local Ray serves the whole module (it starts in ~5 s).
"""

from __future__ import annotations

import json
import os
import signal

import pytest

ray = pytest.importorskip("ray")

from support import needs_smollm2  # noqa: E402
from test_runner import DictStore, shape  # noqa: E402

from eager_eval.common.errors import UserError  # noqa: E402
from eager_eval.core.config import EagerConfig  # noqa: E402
from eager_eval.core.runner import run  # noqa: E402
from eager_eval.core.worker import WorkersLostError  # noqa: E402
from eager_eval.engines.registry import EngineOptions, load_engine  # noqa: E402
from eager_eval.pipeline.answers import AnswerType  # noqa: E402
from eager_eval.pipeline.pool import Label, Pool, pool_prompt, run_pool  # noqa: E402
from eager_eval.pipeline.prompts import Prompt, PromptEncoder, PromptSettings  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (8 logical CPUs: the shared 2 + 3 replicas, and a test's own 2)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=8, include_dashboard=False, logging_level="WARNING")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def replicated(local_ray):
    """Two and three replicas of the `mixed` scripted engine, shared by the tests that kill none."""
    engines = {n: load_engine("mixed", EngineOptions("scripted", replicas=n)) for n in (2, 3)}
    yield engines
    for engine in engines.values():
        engine.close()


def config(mode: str, **kw) -> EagerConfig:
    base = dict(mode=mode, theta=0.6, max_seqs=3, percentile=None, max_new_tokens=24, seed=7)
    base.update(kw)
    return EagerConfig(**base)


QUESTIONS = [f"question {i}{chr(97 + i)}" for i in range(10)]
"""Ten prompts: an odd last character branches often under the `mixed` script, even stays calm."""


def pool_records(engine, cfg: EagerConfig, model: str, options: EngineOptions) -> tuple:
    """(RunResult shape, the records as JSON) of one pool through the pipeline."""
    encoder = PromptEncoder.for_engine(engine, PromptSettings())
    prompts = [pool_prompt(encoder, Prompt(q), f"q{i}", label=Label(str(i % 4), AnswerType.MATH))
               for i, q in enumerate(QUESTIONS)]
    outcome = run_pool(Pool("replicas", prompts, cfg, model, options, PromptSettings()), engine)
    records = [json.dumps({k: v for k, v in r.to_dict().items() if k != "versions"},
                          sort_keys=True) for r in outcome.records]
    return shape(outcome.result), records


@pytest.mark.parametrize("mode", ["full_parallel", "eager_adapt", "eager"])
def test_one_two_and_three_replicas_grow_the_same_trees_and_records(replicated, mode):
    cfg = config(mode)
    seen = {}
    for replicas in (1, 2, 3):
        options = EngineOptions("scripted", replicas=replicas)
        engine = replicated[replicas] if replicas > 1 else load_engine("mixed", options, cfg)
        seen[replicas] = pool_records(engine, cfg, "mixed", options)
    assert replicated[3].info()["replicas"] == 3
    assert seen[2] == seen[1]
    assert seen[3] == seen[1]


def test_trees_spread_over_the_replicas_least_loaded_first(replicated):
    cfg = config("full_parallel")
    backend = replicated[3].new_backend(cfg)
    run(_inputs(replicated[3], 9), backend, cfg)
    where = backend.fleet.placement.where
    round0 = [where[(p, 0)] for p in range(9)]
    assert sorted(round0) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # nine equal trees, three replicas


def _inputs(engine, n: int):
    encoder = PromptEncoder.for_engine(engine, PromptSettings())
    return [encoder.encode(Prompt(f"problem {i}{chr(97 + i % 26)}")) for i in range(n)]


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("mode", ["eager_adapt", "eager"])
def test_a_replica_killed_mid_run_loses_nothing(local_ray, mode):
    cfg = config(mode, max_new_tokens=40)
    verifier = (lambda p, text: len(text) % 3 == 0) if mode == "eager" else None
    local = load_engine("mixed", EngineOptions("scripted"), cfg)
    prompts = _inputs(local, 12)
    expected = shape(run(prompts, local.new_backend(cfg), cfg, verifier=verifier))

    engine = load_engine("mixed", EngineOptions("scripted", replicas=2), cfg)
    backend = engine.new_backend(cfg)
    killed: list[int] = []

    def kill_the_busiest(tree) -> None:
        if killed:
            return
        placement = backend.fleet.placement
        victim = max(placement.alive, key=lambda w: (len(placement.open[w]), w))
        killed.append(victim)
        _kill(engine.pids[victim])

    result = run(prompts, backend, cfg, verifier=verifier, on_tree_done=kill_the_busiest)
    assert shape(result) == expected
    assert killed and engine.alive == [1 - killed[0]]
    assert backend.fleet.placement.restarted, "the killed replica still held unfinished trees"
    engine.close()


def test_when_every_replica_is_gone_one_clear_error_and_a_rerun_resumes(replicated):
    cfg = config("eager_adapt", max_new_tokens=40)
    local = load_engine("mixed", EngineOptions("scripted"), cfg)
    prompts = _inputs(local, 10)
    undisturbed = run(prompts, local.new_backend(cfg), cfg)
    expected, n_trees = shape(undisturbed), sum(len(p.trees) for p in undisturbed.prompts)

    engine = load_engine("mixed", EngineOptions("scripted", replicas=2), cfg)
    store = DictStore()

    def kill_all(tree) -> None:
        for index in list(engine.alive):
            _kill(engine.pids[index])

    with pytest.raises(WorkersLostError) as caught:
        run(prompts, engine.new_backend(cfg), cfg, store=store, on_tree_done=kill_all)
    assert isinstance(caught.value, UserError)
    assert "every replica is gone" in str(caught.value) and "--resume" in str(caught.value)
    kept = len(store.trees)
    assert 1 <= kept < n_trees

    generated = []
    result = run(prompts, replicated[2].new_backend(cfg), cfg, store=store,
                 on_tree_done=generated.append)
    assert shape(result) == expected
    assert len(generated) == n_trees - kept, "stored trees are not generated again"


def test_progress_counts_the_replicas_tokens(replicated):
    from eager_eval.pipeline.progress import RunCounts

    cfg = config("eager_adapt")
    seen = {}
    for engine in (load_engine("mixed", EngineOptions("scripted")), replicated[2]):
        counts = RunCounts(5)
        backend = counts.watch(engine.new_backend(cfg))
        run(_inputs(engine, 5), backend, cfg, on_tree_done=counts.tree_done)
        seen[engine is replicated[2]] = (counts.round0, counts.later, counts.tokens_reported)
    assert seen[True] == seen[False] and seen[True][2] > 0


def test_theta_auto_is_measured_on_a_replica_as_on_one_engine(replicated):
    cfg = config("eager_adapt", theta="auto")
    one_options = EngineOptions("scripted")
    one = load_engine("mixed", one_options, cfg)
    assert (pool_records(replicated[2], cfg, "mixed", EngineOptions("scripted", replicas=2))
            == pool_records(one, cfg, "mixed", one_options))


# --- bad input (more in test_replicas_settings.py) ---------------------------------------


def test_a_ray_address_that_does_not_answer_is_one_line(monkeypatch):
    from eager_eval.engines.replicas import ReplicasError, connect

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    with pytest.raises(ReplicasError, match="RAY_ADDRESS=127.0.0.1:9 does not answer"):
        EngineOptions("scripted", replicas=2).check("mixed")
    if not ray.is_initialized():
        with pytest.raises(ReplicasError, match="does not answer"):
            connect(2)


@pytest.fixture(scope="module")
def transformers_runs(replicated, tmp_path_factory):
    """The tiny random Llama (SmolLM2's tokenizer) on the HF engine with 1 (no Ray), 2 and 3
    replicas: {replicas: (trees, records)}."""
    from support import save_tiny_llama_with_smollm2_tokenizer

    model = str(save_tiny_llama_with_smollm2_tokenizer(tmp_path_factory.mktemp("tiny") / "m"))
    cfg = config("eager_adapt", theta=2.0, max_seqs=3, max_new_tokens=16)
    seen = {}
    for replicas in (1, 2, 3):
        options = EngineOptions("hf", device="cpu", threads=1, replicas=replicas)
        engine = load_engine(model, options, cfg)
        seen[replicas] = pool_records(engine, cfg, model, options)
        if replicas > 1:
            engine.close()
    return seen


@pytest.mark.slow
@needs_smollm2
def test_replicas_of_a_transformers_model_grow_the_same_trees(transformers_runs):
    seen = transformers_runs
    assert any(len(r.split('"index"')) > 2 for r in seen[1][1]), "some prompt branched"
    assert seen[2][0] == seen[1][0]
    assert seen[3][0] == seen[1][0]


@pytest.mark.slow
@needs_smollm2
def test_replicas_of_a_transformers_model_write_byte_identical_records(transformers_runs):
    """A replica count changes which trees share a batch; the HF backend's numbers do not
    depend on it (docs/ARCHITECTURE.md, "The same tree whatever the batch"), so the records,
    entropies included, are byte-identical."""
    seen = transformers_runs
    assert seen[2][1] == seen[1][1]
    assert seen[3][1] == seen[1][1]
