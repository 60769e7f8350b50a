"""`eager-eval sweep`: grid expansion, resume (finished cells skipped), failures, the command
line each cell gets, the report at the end, and the configs shipped in configs/."""

from __future__ import annotations

import argparse
import dataclasses
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from eager_eval.core.config import ConfigError, EagerConfig
from eager_eval.frontends.cli.sweep import (
    CellFailed,
    add_sweep_parser,
    cell_status,
    expand_cells,
    load_sweep_config,
    parse_sweep_config,
    run_command_line,
    run_sweep,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

GRID = {
    "models": ["org/model-a", "model-b"],
    "tasks": ["demo"],
    "modes": ["full_parallel", "eager_init", "eager_adapt"],
    "theta": [1.5, 2.0],
    "max_seqs": [4],
    "temperature": 0.7,
    "max_new_tokens": 64,
    "think_end": None,
    "limit": 3,
}


def _sweep(tmp_path: Path, **changes):
    return parse_sweep_config({**GRID, "output": str(tmp_path / "sweep"), **changes})


class FakeRunner:
    """Stands in for `eager-eval run`: writes the results.json a finished run leaves."""

    def __init__(self, fail: set[str] = frozenset()):
        self.calls: list[tuple] = []
        self.fail = fail

    def __call__(self, model, data, config, output_dir, resume=True, **options):
        self.calls.append((model, data.name, config.mode.value, config.theta, config.max_seqs, resume, options))
        if f"{model}:{config.mode.value}" in self.fail:
            raise CellFailed("eager-eval run exited with code 1")
        auto = config.theta_is_auto
        if auto:  # as run_session does: calibrate, then record
            config = dataclasses.replace(config, theta=2.2)
        tokens = 1000 if config.mode.value == "full_parallel" else int(400 * config.theta)
        results = {
            "tool": "eager-eval", "format_version": 1, "command": "run", "model": model, "task": data.name,
            "runs": [{"method": config.mode.value, "settings": config.to_dict(),
                      "metrics": {"n_prompts": 3, "pass_at_k": 0.5, "tokens_generated": tokens}}],
            **({"theta_auto": {"theta": config.theta}} if auto else {}),
        }
        Path(output_dir, "results.json").write_text(json.dumps(results))


def test_grid_expands_with_one_full_parallel_cell_per_model_task_and_m(tmp_path):
    cells = expand_cells(_sweep(tmp_path))
    assert len(cells) == 2 * (1 + 2 * 2)  # models x (FP + 2 modes x 2 thetas)
    names = [c.output_dir.relative_to(tmp_path / "sweep").as_posix() for c in cells[:5]]
    assert names == [
        "org__model-a/demo/full_parallel-M4",
        "org__model-a/demo/eager_init-theta1.5-M4",
        "org__model-a/demo/eager_init-theta2-M4",
        "org__model-a/demo/eager_adapt-theta1.5-M4",
        "org__model-a/demo/eager_adapt-theta2-M4",
    ]
    fp = cells[0]
    assert fp.config.theta == EagerConfig().theta and "theta" not in fp.explicit
    assert cells[1].config.temperature == 0.7 and cells[1].config.think_end is None
    assert set(cells[1].explicit) == {"mode", "theta", "max_seqs", "temperature", "max_new_tokens",
                                      "think_end"}


def test_grid_over_m_and_scalars(tmp_path):
    cells = expand_cells(_sweep(tmp_path, models="m", modes="eager_adapt", theta=2.5, max_seqs=[4, 8]))
    assert [(c.config.max_seqs, c.config.theta) for c in cells] == [(4, 2.5), (8, 2.5)]


def test_theta_auto_cells_calibrate_run_once_and_keep_their_own_directory(tmp_path):
    from eager_eval.frontends.cli.main import build_parser

    sweep = _sweep(tmp_path, models="m", tasks=[{"data": "p.jsonl"}], modes="eager_adapt",
                   theta=[2.0, "auto"])
    numeric, auto = expand_cells(sweep)
    assert (numeric.theta_auto, auto.theta_auto) == (False, True)
    assert auto.output_dir.name == "eager_adapt-thetaauto-M4" and "θ=auto" in auto.name
    args = run_command_line(auto.model, auto.task, auto.config, auto.output_dir,
                            settings=auto.explicit)
    assert args[args.index("--theta") + 1] == "auto"
    assert build_parser().parse_args(args).theta == "auto"

    runner = FakeRunner()
    run_sweep(sweep, runner=runner, report=False)
    assert [c[3] for c in runner.calls] == [2.0, "auto"]  # the cell's config says auto
    assert cell_status(auto)[0] == "done"  # its recorded theta (2.2, calibrated) is not a mismatch
    again = FakeRunner()
    run_sweep(sweep, runner=again, report=False)
    assert again.calls == []
    manifest = json.loads((sweep.output / "sweep.json").read_text())
    assert [c["theta"] for c in manifest["cells"]] == ["2", "auto"]

    # a fixed-theta run in an auto cell's directory (and the reverse) is another experiment
    auto_results = json.loads((auto.output_dir / "results.json").read_text())
    (numeric.output_dir / "results.json").write_text(json.dumps(auto_results))
    status, why = cell_status(numeric)
    assert status == "mismatch" and "theta auto vs 2" in why
    del auto_results["theta_auto"]
    (auto.output_dir / "results.json").write_text(json.dumps(auto_results))
    status, why = cell_status(auto)
    assert status == "mismatch" and "theta a number vs auto" in why


@pytest.mark.parametrize("changes, message", [
    ({"thetas": [2.0]}, "unknown sweep key 'thetas' (did you mean 'theta'?)"),
    ({"theta": [-1.0]}, "theta must be a number of nats > 0"),
    ({"modes": ["eager_fast"]}, "mode must be one of: full_parallel, eager_init, eager_adapt, eager"),
    ({"temperature": -0.5}, "temperature must be a finite number >= 0"),
    ({"limit": 0}, "limit must be an integer >= 1"),
    ({"task": "aime25"}, "task must be given once (also set as tasks)"),
    ({"max_seqs": []}, "max_seqs must be a value or a non-empty list"),
    ({"tasks": ["aime24"]}, "tasks must be demo, one of aime25, gpqa_diamond, a .jsonl/.csv file"),
    ({"tasks": [{"data": "a.jsonl", "answer_type": "letters"}]}, "answer_type must be math or choice"),
    ({"tasks": [{"file": "a.jsonl"}]}, "unknown task key 'file'"),
])
def test_bad_config_names_the_key(tmp_path, changes, message):
    with pytest.raises(ConfigError) as err:
        _sweep(tmp_path, **changes)
    assert message in str(err.value)


def test_command_line_of_a_demo_cell(tmp_path):
    cell = expand_cells(_sweep(tmp_path))[1]
    args = run_command_line(cell.model, cell.task, cell.config, cell.output_dir, limit=3,
                            settings=cell.explicit,
                            run_args={"device": "cpu", "thinking": False, "progress": None})
    assert args == [
        "demo", "--model", "org/model-a", "--modes", "eager_init", "--output", str(cell.output_dir),
        "--max-new-tokens", "64", "--max-seqs", "4", "--temperature", "0.7", "--theta", "1.5",
        "--think-end", "none", "--limit", "3", "--device", "cpu", "--no-thinking", "--resume",
    ]


def test_command_line_of_a_data_file_cell(tmp_path):
    sweep = _sweep(tmp_path, tasks=[{"data": "probs/mine.csv", "answer_type": "choice",
                                     "problem_field": "q"}], modes=["eager_adapt"], theta=[2.5])
    cell = expand_cells(sweep)[0]
    assert cell.task.name == "mine" and cell.output_dir.parts[-2] == "mine"
    args = run_command_line(cell.model, cell.task, cell.config, cell.output_dir,
                            settings=("mode", "theta", "max_seqs"))
    assert args == [
        "run", "--model", "org/model-a", "--data", "probs/mine.csv", "--answer-type", "choice",
        "--output", str(cell.output_dir), "--problem-field", "q", "--mode", "eager_adapt",
        "--theta", "2.5", "--max-seqs", "4", "--resume",
    ]


def test_builtin_tasks_become_data_files_with_the_shared_prompts(tmp_path):
    """aime25 / gpqa_diamond are written once into <output>/data/ from eager_eval.pipeline.datasets, in
    the layout `eager-eval run --data` reads: the CLI then builds the very prompts lm-eval and
    Inspect see (made-up questions here; no GPQA text anywhere)."""
    from eager_eval.pipeline.task_data import load_data_task
    from eager_eval.pipeline.datasets import gpqa_questions, read_math_jsonl
    from eager_eval.frontends.cli.sweep import prepare_task

    data = tmp_path / "data"
    data.mkdir()
    (data / "aime25.jsonl").write_text("".join(json.dumps(
        {"id": f"x-{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(3)))
    header = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
    rows = [[f"Made-up question {i}, with a comma?", f"right {i}", "w1", "w2", "w3"] for i in range(4)]
    with open(data / "gpqa_diamond.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    sweep = _sweep(tmp_path, tasks=["aime25", "gpqa_diamond"], data_dir=str(data))

    aime = prepare_task(sweep.tasks[0], sweep)
    assert aime.data == sweep.output / "data" / "aime25.jsonl"
    task = load_data_task(str(aime.data), "math", None, "answer", None)
    assert task.name == "aime25"
    assert task.prompt_texts == [p.prompt for p in read_math_jsonl(data / "aime25.jsonl")]

    gpqa = prepare_task(sweep.tasks[1], sweep)
    task = load_data_task(str(gpqa.data), "choice", None, "answer", None)
    expected = gpqa_questions([dict(zip(header, r)) for r in rows])
    assert task.name == "gpqa_diamond"
    assert task.prompt_texts == [q.prompt for q in expected]
    assert [p.target for p in task.problems] == [q.answer for q in expected]

    before = gpqa.data.stat().st_mtime_ns  # written once: a resume reads the same bytes
    prepare_task(sweep.tasks[1], sweep)
    assert gpqa.data.stat().st_mtime_ns == before


def test_sweep_runs_every_cell_then_resumes_without_rerunning(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    runner = FakeRunner()
    outcome = run_sweep(sweep, runner=runner)
    assert len(runner.calls) == 10 and all(c.status == "ran" for c in outcome.cells)
    assert all(call[5] is True for call in runner.calls)  # resume=True always
    assert runner.calls[0][6]["limit"] == 3
    assert outcome.report_rows == 10
    assert (sweep.output / "report" / "leaderboard.html").is_file()
    manifest = json.loads((sweep.output / "sweep.json").read_text())
    assert manifest["tool"] == "eager-eval-sweep" and {c["status"] for c in manifest["cells"]} == {"ran"}

    again = FakeRunner()
    outcome = run_sweep(sweep, runner=again, report=False)
    assert again.calls == [] and all(c.status == "done" for c in outcome.cells)

    (expand_cells(sweep)[3].output_dir / "results.json").unlink()  # one cell lost its results
    third = FakeRunner()
    run_sweep(sweep, runner=third, report=False)
    assert [(c[0], c[2], c[3]) for c in third.calls] == [("org/model-a", "eager_adapt", 1.5)]


def test_report_over_the_sweep_has_savings_per_cell(tmp_path):
    from test_report_helpers import read_csv

    sweep = _sweep(tmp_path, models=["m"])
    run_sweep(sweep, runner=FakeRunner())
    rows = read_csv(sweep.output / "report" / "leaderboard.csv")
    savings = {(r["method"], r["theta"]): r["savings_vs_full_parallel"] for r in rows}
    assert savings[("full_parallel", "")] == ""
    assert float(savings[("eager_init", "1.5")]) == pytest.approx(1 - 600 / 1000)
    assert float(savings[("eager_adapt", "2.0")]) == pytest.approx(1 - 800 / 1000)


def test_failed_cell_does_not_stop_the_others(tmp_path):
    sweep = _sweep(tmp_path)
    runner = FakeRunner(fail={"model-b:eager_init"})
    outcome = run_sweep(sweep, runner=runner, report=False)
    assert len(runner.calls) == 10
    assert [(c.cell.model, c.cell.mode) for c in outcome.failed] == [("model-b", "eager_init")] * 2
    assert "exited with code 1" in outcome.failed[0].message


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    runner = FakeRunner(fail={"org/model-a:full_parallel"})
    outcome = run_sweep(_sweep(tmp_path), runner=runner, report=False, fail_fast=True)
    assert len(runner.calls) == 1 and len(outcome.cells) == 1


def test_a_cell_whose_run_ends_without_results_is_failed(tmp_path):
    outcome = run_sweep(_sweep(tmp_path, models=["m"]), runner=lambda *a, **k: None, report=False)
    assert {c.status for c in outcome.cells} == {"failed"}
    assert "no results.json yet" in outcome.cells[0].message


def test_a_directory_holding_other_settings_is_not_overwritten(tmp_path):
    sweep = _sweep(tmp_path, models=["m"])
    run_sweep(sweep, runner=FakeRunner(), report=False)
    cell = expand_cells(sweep)[1]  # eager_init, theta 1.5
    data = json.loads((cell.output_dir / "results.json").read_text())
    data["runs"][0]["settings"]["temperature"] = 1.0
    (cell.output_dir / "results.json").write_text(json.dumps(data))
    assert cell_status(cell)[0] == "mismatch"
    runner = FakeRunner()
    outcome = run_sweep(sweep, runner=runner, report=False)
    assert runner.calls == []
    assert "temperature 1.0 vs 0.7" in outcome.failed[0].message
    assert json.loads((cell.output_dir / "results.json").read_text())["runs"][0]["settings"]["temperature"] == 1.0


def test_dry_run_runs_nothing(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    runner = FakeRunner()
    outcome = run_sweep(sweep, runner=runner, dry_run=True)
    assert runner.calls == [] and {c.status for c in outcome.cells} == {"planned"}
    assert not sweep.output.exists()
    assert "[1/10] org/model-a demo full_parallel M=4: to run" in capsys.readouterr().out


def test_sweep_command_bad_config_exits_2(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("models: [m]\ntasks: [demo]\nmodes: [eager]\ntheta: -2\n")
    parser = argparse.ArgumentParser()
    add_sweep_parser(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(config), "--dry-run"])
    assert args.func(args) == 2
    assert "theta must be" in capsys.readouterr().err


def test_sweep_command_dry_run_with_overrides(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_sweep_parser(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(CONFIGS / "demo_sweep.yaml"), "--dry-run",
                              "--output", str(tmp_path / "o"), "--limit", "2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "sweep: 5 planned" in out and str(tmp_path / "o") in out


@pytest.mark.parametrize("name", ["smollm3-3b", "qwen3-4b", "deepseek-r1-0528-qwen3-8b", "gpt-oss-20b"])
def test_paper_configs_hold_the_paper_settings(name):
    sweep = load_sweep_config(CONFIGS / f"{name}.yaml")
    cells = expand_cells(sweep)
    assert [t.name for t in sweep.tasks] == ["aime25", "gpqa_diamond"]
    assert {c.config.think_end for c in cells} == {"<|channel|>final<|message|>" if name == "gpt-oss-20b" else "</think>"}
    assert {c.mode for c in cells} == {"full_parallel", "eager_init", "eager_adapt", "eager"}
    for cell in cells:
        c = cell.config
        assert (c.max_seqs, c.temperature, c.top_p, c.top_k, c.max_new_tokens) == (32, 0.6, 1.0, 0, 32768)
        assert c.think_end
        if c.is_branching:
            assert 2.0 <= c.theta <= 2.5
    # every cell's command line is one the CLI accepts (run_args included)
    from eager_eval.frontends.cli.main import build_parser

    for cell in cells:
        task = dataclasses.replace(cell.task, data=Path(f"data/{cell.task.name}.jsonl"))
        args = build_parser().parse_args(run_command_line(
            cell.model, task, cell.config, cell.output_dir, run_args=sweep.run_args))
        assert (args.backend, args.dtype, args.engine_arg) == (
            "vllm", "bfloat16", ["gpu_memory_utilization=0.9"])


def test_demo_config_is_small():
    sweep = load_sweep_config(CONFIGS / "demo_sweep.yaml")
    cells = expand_cells(sweep)
    assert sweep.models == ["smollm2-135m"] and len(sweep.thetas) == 2
    assert all(c.config.max_seqs == 4 and c.config.max_new_tokens == 64 for c in cells)
    assert sweep.limit is not None and sweep.limit <= 8


def _has_run_subcommand() -> bool:
    """`eager-eval run` exists and takes the options the sweep passes (--output, --resume)."""
    done = subprocess.run([sys.executable, "-c", "import sys; from eager_eval.frontends.cli.main import main; "
                           "sys.exit(main(['run', '--help']))"], capture_output=True, text=True,
                          timeout=120)
    return done.returncode == 0 and "--resume" in done.stdout and "--output" in done.stdout


@pytest.mark.slow
def test_demo_sweep_end_to_end(tmp_path):
    """The real thing: `eager-eval demo` per cell on SmolLM2-135M (CPU, about a minute)."""
    pytest.importorskip("gguf")
    if not _has_run_subcommand():
        pytest.skip("`eager-eval run` is not available yet")
    sweep = load_sweep_config(CONFIGS / "demo_sweep.yaml")
    sweep.output = tmp_path / "demo"
    sweep.limit = 2
    sweep.modes = sweep.modes[::2]  # full_parallel and eager_adapt, one theta: two cells
    sweep.thetas = sweep.thetas[:1]
    outcome = run_sweep(sweep)
    assert outcome.failed == [] and outcome.report_rows == 2
    again = run_sweep(sweep, report=False)
    assert {c.status for c in again.cells} == {"done"}


@pytest.mark.slow
def test_a_cell_that_failed_to_start_runs_when_the_sweep_is_fixed(tmp_path):
    """Cells always resume. A failed start used to leave a tree-file header behind (here with
    device cuda), so the fixed sweep's --resume was refused until someone deleted the cell."""
    import torch

    from support import save_tiny_word_model

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    model = save_tiny_word_model(tmp_path / "tiny")
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"problem": f"what is {i} + 4", "answer": str(i + 4)}) + "\n"
                            for i in range(2)))
    grid = {"models": [str(model)], "tasks": [str(data)], "modes": ["eager_init"], "max_seqs": 2,
            "max_new_tokens": 4, "entropy_k": 5, "output": str(tmp_path / "sweep"), "report": False}
    broken = run_sweep(parse_sweep_config({**grid, "run_args": {"device": "cuda"}}))
    (failed,) = broken.failed
    assert not (failed.cell.output_dir / "trees").exists(), "the failed start wrote no tree file"
    fixed = run_sweep(parse_sweep_config(grid))
    assert [c.status for c in fixed.cells] == ["ran"]
