"""mode=deepconf and the confidence columns through every front end: the CLI (flags, results.json,
the records), lm-eval (model args), Inspect (-M) and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from eager_eval.frontends.cli import main as cli  # noqa: E402
from eager_eval.pipeline.record import PromptRecord  # noqa: E402
from support import save_tiny_word_model, write_sum_problems  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_word_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def math_file(tmp_path) -> Path:
    return write_sum_problems(tmp_path)


def run_args(model, data, out, *extra) -> list[str]:
    return ["run", "--model", str(model), "--data", str(data), "--output", str(out),
            "--max-seqs", "4", "--max-new-tokens", "12", "--entropy-k", "5", "--no-progress",
            *extra]


def test_cli_runs_deepconf_beside_full_parallel(tiny_model_dir, math_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "full_parallel")) == 0
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "deepconf",
                             "--deepconf-warmup", "2", "--deepconf-percentile", "90",
                             "--confidence-window", "3")) == 0
    assert "deepconf" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    runs = {e["method"]: e for e in results["runs"]}
    dc, fp = runs["deepconf"], runs["full_parallel"]
    assert dc["settings"]["confidence_window"] == 3 and dc["settings"]["deepconf_warmup"] == 2
    assert dc["settings"]["confidence_k"] == 5  # none: entropy_k's
    for entry in (dc, fp):
        assert entry["metrics"]["conf_cons_at_k"] is not None
        assert {"top10_cons_at_k", "top90_cons_at_k"} <= set(entry["metrics"])
    assert dc["savings_vs_full_parallel"] == pytest.approx(
        1 - dc["metrics"]["tokens_generated"] / fp["metrics"]["tokens_generated"])
    assert [r["round"] for r in dc["rounds"]] == [0, 1]
    records = [PromptRecord.from_dict(json.loads(line))
               for line in (out / "deepconf.jsonl").read_text().splitlines()]
    for record in records:
        assert [t.round for t in record.trees] == [0, 1] and record.n_sequences == 4
        assert record.trees[0].confidence_bar is None and record.trees[1].confidence_bar > 0
        assert all(s.confidence is not None for s in record.sequences)
    assert cli.main(["report", str(out), "--output", str(tmp_path / "report")]) == 0
    board = (tmp_path / "report" / "leaderboard.md").read_text()
    assert "DeepConf" in board and "Conf Cons@k %" in board


@pytest.mark.parametrize("flags, words", [
    (("--mode", "deepconf"), "deepconf_warmup=16 leaves no budget"),
    (("--confidence-window", "0"), "confidence_window must be an integer >= 1"),
    (("--mode", "deepconf", "--deepconf-warmup", "1", "--deepconf-percentile", "100"),
     "deepconf_percentile must be in (0, 100)"),
    (("--confidence-k", "11"), "confidence_k must be 0 (off) or <= the model's vocabulary size"),
])
def test_cli_bad_confidence_settings_are_one_line(tiny_model_dir, math_file, tmp_path, capsys,
                                                  flags, words):
    assert cli.main(run_args(tiny_model_dir, math_file, tmp_path / "o", *flags)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0]


def test_lm_eval_model_args_run_deepconf():
    pytest.importorskip("lm_eval")
    from test_lm_eval_mapping import evaluator_requests, run_texts

    from eager_eval.core.config import EagerConfig
    from eager_eval.frontends.lm_eval.models import split_model_args

    eager, _ = split_model_args({"pretrained": "x", "mode": "deepconf", "max_seqs": "4",
                                 "deepconf_warmup": "2", "confidence_window": "2"},
                                frozenset({"pretrained"}), "eager-hf")
    config = EagerConfig.from_mapping(eager)
    requests = evaluator_requests({"t": [("hard a", 4), ("easy b", 4)]})
    texts, outcomes, _ = run_texts(requests, config)
    (outcome,) = outcomes
    assert len(texts) == len(requests)
    for record in outcome.records:
        assert [t.round for t in record.trees] == [0, 1] and record.n_sequences == 4
        assert all(s.confidence is not None for s in record.sequences)


def test_inspect_minus_m_runs_deepconf(tmp_path):
    pytest.importorskip("inspect_ai")
    from inspect_ai.model import get_model
    from test_inspect_provider import question_task, run_eval

    from eager_eval.engines.scripted import ScriptedEngine, mixed_script

    texts = [f"q{i}" for i in range(4)]
    model = get_model("eager/scripted", engine=ScriptedEngine(mixed_script()), memoize=False,
                      batch_size=4, batch_window=30, mode="deepconf", max_seqs=4,
                      deepconf_warmup=2, confidence_window=3, think_end=None, seed=5)
    log = run_eval(question_task(texts), model, tmp_path, max_connections=4)
    metrics = {name: m.value for name, m in log.results.scores[0].metrics.items()}
    assert 0 <= metrics["conf_cons_at_k"] <= 1 and metrics["n_sequences"] == 4
    record = PromptRecord.from_dict(log.samples[0].output.metadata)
    assert record.settings["mode"] == "deepconf" and [t.round for t in record.trees] == [0, 1]


def test_a_sweep_gives_deepconf_one_cell_per_model_task_and_m(tmp_path):
    """DeepConf never branches: like Full Parallel, one cell whatever the thetas, its settings
    from the sweep's keys."""
    from eager_eval.frontends.cli.sweep_grid import expand_cells, grid_size, parse_sweep_config

    sweep = parse_sweep_config({"models": ["m"], "tasks": ["demo"], "theta": [1.5, 2.0],
                                "modes": ["full_parallel", "deepconf", "eager_adapt"],
                                "max_seqs": [4], "deepconf_warmup": 2, "confidence_window": 16,
                                "output": str(tmp_path / "sweep")})
    cells = expand_cells(sweep)
    names = [c.output_dir.name for c in cells]
    assert names == ["full_parallel-M4", "deepconf-M4", "eager_adapt-theta1.5-M4",
                     "eager_adapt-theta2-M4"]
    assert grid_size(sweep)[0] == len(cells)
    dc = cells[1].config
    assert (dc.deepconf_warmup, dc.confidence_window) == (2, 16) and "theta" not in cells[1].explicit
