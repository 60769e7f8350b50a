"""`replicas=N` reaches EngineOptions from every front end (no Ray needed: nothing loads).

CLI `--replicas N` (and so a sweep's `run_args: {replicas: N}`), lm-eval model args
`replicas=N` (eager-hf, eager-vllm) and `data_parallel_size=N` (lm-eval's own spelling, for
eager-vllm), Inspect `-M replicas=N`. The run itself is tests/test_replicas.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from eager_eval.common.settings import SettingError
from eager_eval.engines.registry import EngineOptions, load_engine
from eager_eval.engines.scripted import ScriptedEngine, mixed_script
from eager_eval.frontends.cli.main import build_parser, engine_options


def test_cli_replicas_flag():
    args = build_parser().parse_args(["run", "--model", "m", "--data", "d.jsonl", "-o", "out",
                                      "--replicas", "3"])
    assert engine_options(args).replicas == 3
    default = build_parser().parse_args(["run", "--model", "m", "--data", "d.jsonl", "-o", "o"])
    assert engine_options(default).replicas == 1


def test_cli_replicas_zero_is_refused():
    from eager_eval.frontends.cli.main import UsageError

    with pytest.raises(UsageError, match="--replicas: must be an integer >= 1, got 0"):
        build_parser().parse_args(["run", "--model", "m", "--data", "d.jsonl", "-o", "o",
                                   "--replicas", "0"])


def test_a_sweep_cell_passes_replicas_to_its_run(tmp_path):
    from eager_eval.frontends.cli.sweep import expand_cells, parse_sweep_config, run_command_line

    sweep = parse_sweep_config({"models": ["org/m"], "tasks": ["aime25"],
                                "modes": ["eager_adapt"], "theta": [2.0],
                                "output": str(tmp_path / "s"), "run_args": {"replicas": 4}})
    cell = expand_cells(sweep)[0]
    task = dataclasses.replace(cell.task, data=Path("data/aime25.jsonl"))
    argv = run_command_line(cell.model, task, cell.config, cell.output_dir,
                            run_args=sweep.run_args)
    assert argv[argv.index("--replicas") + 1] == "4"
    assert engine_options(build_parser().parse_args(argv)).replicas == 4


def test_inspect_m_replicas():
    pytest.importorskip("inspect_ai")
    from eager_eval.frontends.inspect.provider import split_model_args

    _, options, _ = split_model_args({"replicas": "2", "device": "cpu"})
    assert options.replicas == 2 and options.device == "cpu"


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine(mixed_script())


def test_lm_eval_replicas_model_arg(engine):
    pytest.importorskip("lm_eval")
    from eager_eval.frontends.lm_eval.models import EagerHFLM, EagerVLLM

    assert EagerHFLM("m", engine=engine, replicas="2").options.replicas == 2
    assert EagerVLLM("m", engine=engine, replicas=3).options.replicas == 3


def test_lm_eval_data_parallel_size_is_replicas_for_eager_vllm(engine):
    pytest.importorskip("lm_eval")
    from eager_eval.frontends.lm_eval.models import EagerVLLM

    model = EagerVLLM("m", engine=engine, data_parallel_size=2, tensor_parallel_size=2)
    assert model.options.replicas == 2
    assert model.options.engine_args == {"tensor_parallel_size": 2, "seed": 0}
    with pytest.raises(SettingError, match="replicas=2 and data_parallel_size=3 disagree"):
        EagerVLLM("m", engine=engine, replicas=2, data_parallel_size=3)
    assert EagerVLLM("m", engine=engine, replicas=2, data_parallel_size=2).options.replicas == 2


def test_lm_eval_loglikelihood_with_replicas_says_to_use_one(engine):
    pytest.importorskip("lm_eval")
    from eager_eval.frontends.lm_eval.models import EagerHFLM

    with pytest.raises(SettingError, match="run loglikelihood tasks with replicas=1"):
        EagerHFLM("m", engine=engine, replicas=2).loglikelihood([])


def test_engine_options_replicas_is_checked_once():
    assert EngineOptions.from_mapping({"replicas": "4"}).replicas == 4
    for bad in (0, -1, "two", 1.5):
        with pytest.raises(SettingError, match="replicas must be an integer >= 1"):
            EngineOptions(replicas=bad)


# --- bad input ---------------------------------------------------------------------------------


def test_replicas_below_one_is_a_clear_error():
    with pytest.raises(SettingError, match="replicas must be an integer >= 1"):
        EngineOptions("scripted", replicas=0)


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    from eager_eval.engines.replicas import ReplicasError

    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    with pytest.raises(ReplicasError, match=r"pip install 'eager-eval\[ray\]'"):
        EngineOptions("scripted", replicas=2).check("mixed")


@pytest.mark.parametrize("resources, options, words", [
    ({"GPU": 1, "CPU": 16}, dict(backend="hf", device="cuda", replicas=2),
     "more replicas than GPUs: replicas=2 needs 2 GPUs, the Ray cluster has 1; use replicas=1"),
    ({"GPU": 4, "CPU": 16}, dict(backend="vllm", replicas=3,
                                 engine_args={"tensor_parallel_size": 2}),
     "replicas=3 x 2 GPUs each (tensor parallel) needs 6 GPUs, the Ray cluster has 4"),
    ({"GPU": 0, "CPU": 2}, dict(backend="hf", device="cpu", replicas=3, threads=1),
     "more replicas than CPUs"),
    ({"GPU": 2, "CPU": 16}, dict(backend="hf", device="cuda:1", replicas=2),
     "device=cuda:1 names one GPU"),
])
def test_what_the_cluster_cannot_hold_is_refused_by_name(resources, options, words):
    from eager_eval.engines.replicas import ReplicasError, replica_shape

    opts = EngineOptions(**options)
    with pytest.raises(ReplicasError, match=words.replace("(", r"\(").replace(")", r"\)")):
        replica_shape(opts, opts.replicas, resources)


def test_each_replica_gets_a_gpu_or_its_share_of_the_cpus():
    from eager_eval.engines.replicas import replica_shape

    gpu = replica_shape(EngineOptions("hf", replicas=4), 4, {"GPU": 8, "CPU": 64})
    assert (gpu.num_gpus, gpu.options.device, gpu.options.replicas) == (1, "cuda", 1)
    cpu = replica_shape(EngineOptions("hf", replicas=2, threads="auto"), 2, {"CPU": 64})
    assert cpu.num_gpus == 0 and cpu.options.device == "cpu"
    assert cpu.options.threads == cpu.num_cpus >= 1
    tp = replica_shape(EngineOptions("vllm", replicas=2, engine_args={"tensor_parallel_size": 4}),
                       2, {"GPU": 8, "CPU": 64})
    assert tp.num_gpus == 4


def test_several_launched_processes_are_refused_pointing_to_replicas(monkeypatch):
    from eager_eval.engines.replicas import ReplicasError

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ReplicasError, match="process 1 of 4.*replicas=4"):
        load_engine("mixed", EngineOptions("scripted"))
    with pytest.raises(ReplicasError, match="replicas=4"):
        EngineOptions("scripted").check("mixed")


def test_replicas_never_enter_the_fingerprint():
    assert (EngineOptions("hf", device="cpu", replicas=3).fingerprint()
            == EngineOptions("hf", device="cpu").fingerprint())
