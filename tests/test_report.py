"""`eager-eval report` over all three sources: every number in the CSV against its source file.

Fixtures: an eager-eval demo directory and two lm-eval results files (hand-written under
tests/fixtures/report/, made-up numbers), and two Inspect logs written here with inspect_ai.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
from test_report_helpers import (
    EAGER_DEMO,
    LM_EVAL,
    SMOLLM3_FP_METRICS,
    SMOLLM3_INIT_METRICS,
    SMOLLM3_INIT_SAMPLES,
    read_csv,
    write_inspect_fixtures,
)

from eager_eval.report import EXIT_OK, add_report_parser
from eager_eval.report.build import build_report
from eager_eval.report.leaderboard import MISSING, pareto_front
from eager_eval.report.readers import read_runs
from eager_eval.common.settings import parse_key_values as parse_model_args

METRICS = ("n_prompts", "pass_at_k", "pass_at_1", "cons_at_k", "pass_rate", "tokens_generated",
           "tokens_in_outputs", "seqs_mean", "seqs_min", "seqs_max")
NUMERIC_COLUMNS = METRICS + ("theta", "max_seqs", "temperature", "seed", "max_new_tokens",
                             "pass@1", "pass@4", "savings_vs_full_parallel")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    inspect_dir = root / "inspect_logs"
    write_inspect_fixtures(inspect_dir)
    out = root / "out"
    built = build_report([EAGER_DEMO, LM_EVAL, inspect_dir], out, warn=None)
    rows = read_csv(out / "leaderboard.csv")
    return built, rows, out


def _row(rows, model, method, task):
    found = [r for r in rows if (r["model"], r["method"], r["task"]) == (model, method, task)]
    assert len(found) == 1, f"expected one row for {model}/{method}/{task}, got {len(found)}"
    return found[0]


def _number(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def _assert_row(row: dict, expected: dict) -> None:
    """Every numeric column: equal to `expected` where given, empty where not."""
    for column in NUMERIC_COLUMNS:
        want = expected.get(column)
        got = _number(row[column])
        if want is None:
            assert got is None, f"{column}: expected empty (not recorded), got {row[column]!r}"
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12), f"{column}: {got} != {want}"


def test_one_row_per_model_method_task_and_no_warnings(report):
    built, rows, _ = report
    assert built.warnings == []
    keys = sorted((r["model"], r["task"], r["method"], r["harness"]) for r in rows)
    assert keys == [
        ("HuggingFaceTB/SmolLM3-3B", "aime25", "eager_init", "inspect"),
        ("HuggingFaceTB/SmolLM3-3B", "aime25", "full_parallel", "inspect"),
        ("Qwen/Qwen3-4B", "aime25", "eager_adapt", "lm-eval"),
        ("Qwen/Qwen3-4B", "aime25", "full_parallel", "lm-eval"),
        ("smollm2-135m", "demo", "eager_adapt", "eager-eval"),
        ("smollm2-135m", "demo", "full_parallel", "eager-eval"),
    ]


def test_eager_eval_numbers_match_results_json(report):
    _, rows, _ = report
    data = json.loads((EAGER_DEMO / "results.json").read_text())
    for run in data["runs"]:
        row = _row(rows, "smollm2-135m", run["method"], "demo")
        settings = run["settings"]
        expected = {name: run["metrics"][name] for name in METRICS}
        expected["pass@1"] = run["metrics"]["pass@1"]
        expected["pass@4"] = run["metrics"]["pass@4"]
        expected.update(max_seqs=settings["max_seqs"], temperature=settings["temperature"],
                        seed=settings["seed"], max_new_tokens=settings["max_new_tokens"])
        if run["method"] != "full_parallel":
            expected["theta"] = settings["theta"]
            expected["savings_vs_full_parallel"] = 1 - 478 / 696  # by hand: #T 478 vs 696
        _assert_row(row, expected)
        assert row["source"].endswith("eager_demo/results.json")


def test_eager_eval_savings_agree_with_stored_value(report):
    _, rows, _ = report
    stored = json.loads((EAGER_DEMO / "results.json").read_text())["runs"][1]["savings_vs_full_parallel"]
    assert float(_row(rows, "smollm2-135m", "eager_adapt", "demo")["savings_vs_full_parallel"]) == \
        pytest.approx(stored)


def test_lm_eval_numbers_match_results_and_samples(report):
    _, rows, _ = report
    folder = LM_EVAL / "Qwen__Qwen3-4B"
    adapt = json.loads((folder / "results_2025-06-02T09-30-00.000001.json").read_text())
    fp = json.loads((folder / "results_2025-06-02T11-45-10.500000.json").read_text())
    samples = [json.loads(line) for line in
               (folder / "samples_aime25_2025-06-02T09-30-00.000001.jsonl").read_text().splitlines()]

    a = adapt["results"]["aime25"]  # metrics under the tasks' filter "all"
    info = adapt["config"]["eager_eval"]
    stats = info["tasks"]["aime25"][0]  # the adapter's exact totals and what it ran
    assert a["tokens_generated,all"] == stats["tokens_generated"] == sum(s["tokens_generated"] for s in samples)
    _assert_row(_row(rows, "Qwen/Qwen3-4B", "eager_adapt", "aime25"), {
        "n_prompts": a["sample_len"], "pass_at_k": a["pass_at_k,all"], "pass_at_1": a["pass_at_1,all"],
        "cons_at_k": a["cons_at_k,all"], "pass_rate": a["pass_rate,all"],
        "tokens_generated": stats["tokens_generated"],  # 4062
        "seqs_mean": a["n_sequences,all"], "seqs_min": stats["seqs_min"], "seqs_max": stats["seqs_max"],
        "theta": info["settings"]["theta"], "max_seqs": info["settings"]["max_seqs"],
        "temperature": stats["temperature"], "seed": info["settings"]["seed"],
        "max_new_tokens": stats["max_new_tokens"],  # the task's max_gen_toks, not the config default
        "savings_vs_full_parallel": 1 - 4062 / 7500,  # by hand
    })
    f = fp["results"]["aime25"]
    fp_stats = fp["config"]["eager_eval"]["tasks"]["aime25"][0]
    _assert_row(_row(rows, "Qwen/Qwen3-4B", "full_parallel", "aime25"), {
        "n_prompts": 5, "pass_at_k": f["pass_at_k,all"], "pass_at_1": f["pass_at_1,all"],
        "pass_rate": f["pass_rate,all"], "tokens_generated": 7500, "seqs_mean": 4.0,
        "seqs_min": fp_stats["seqs_min"], "seqs_max": fp_stats["seqs_max"],
        "max_seqs": 4, "temperature": 0.6, "seed": 0, "max_new_tokens": 1024,
        # not recorded: cons_at_k (not in this task's metrics), tokens_in_outputs
    })


def test_inspect_numbers_match_logs(report):
    _, rows, _ = report
    _assert_row(_row(rows, "HuggingFaceTB/SmolLM3-3B", "eager_init", "aime25"), {
        **SMOLLM3_INIT_METRICS,
        "seqs_min": min(len(s["sequences"]) for s in SMOLLM3_INIT_SAMPLES),
        "seqs_max": max(len(s["sequences"]) for s in SMOLLM3_INIT_SAMPLES),
        "theta": 2.0, "max_seqs": 4, "temperature": 0.6,
        "savings_vs_full_parallel": 1 - 3000 / 6000,  # by hand
    })
    _assert_row(_row(rows, "HuggingFaceTB/SmolLM3-3B", "full_parallel", "aime25"), {
        **SMOLLM3_FP_METRICS, "max_seqs": 4, "temperature": 0.6,
    })


def test_savings_only_against_full_parallel_of_same_model_and_task(report):
    _, rows, _ = report
    for row in rows:
        if row["method"] == "full_parallel":
            assert row["savings_vs_full_parallel"] == ""
            assert row["baseline_source"] == ""
        else:
            baseline = _row(rows, row["model"], "full_parallel", row["task"])
            assert row["baseline_source"] == baseline["source"]
            expected = 1 - float(row["tokens_generated"]) / float(baseline["tokens_generated"])
            assert float(row["savings_vs_full_parallel"]) == pytest.approx(expected)


def test_markdown_shows_missing_values_as_dash_and_settings(report):
    _, _, out = report
    md = (out / "leaderboard.md").read_text()
    line = next(l for l in md.splitlines() if "SmolLM3-3B" in l and "EAGer-init" in l)
    cells = [c.strip() for c in line.strip("|").split("|")]
    # Model Task Method θ M Temp Seed Pass@k pass@1 Cons@k ConfCons@k Top10 Top90 PR #T #S
    # Savings pass@4 Prompts Front Source
    assert cells[:8] == ["HuggingFaceTB/SmolLM3-3B", "aime25", "EAGer-init", "2", "4", "0.6", MISSING, "50.0"]
    assert cells[8] == MISSING and cells[13] == MISSING  # pass@1 and Pass Rate not recorded
    assert cells[10:13] == [MISSING] * 3  # no confidence recorded: the votes are blank
    assert cells[9] == "25.0" and cells[14] == "3,000" and cells[15] == "2.50 (1–4)"
    assert cells[16] == "50.0"
    fp_line = next(l for l in md.splitlines() if "Qwen3-4B" in l and "Full Parallel" in l)
    assert "baseline" in fp_line
    assert md.rstrip().endswith("None.")  # the Warnings section, empty


def test_plots_written_and_embedded(report):
    built, _, out = report
    for name in ("accuracy_vs_tokens.png", "sequences_per_prompt.png", "branch_points.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    html = (out / "leaderboard.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "http://" not in html and "https://" not in html  # self-contained


def test_branch_points_and_prompts_read_from_every_source():
    runs = read_runs([EAGER_DEMO, LM_EVAL]).runs
    adapt = next(r for r in runs if r.harness == "eager-eval" and r.method == "eager_adapt")
    assert [p.n_sequences for p in adapt.prompts] == [2, 6, 3]
    assert sorted(b.position for b in adapt.branches) == [5, 7, 10, 20, 30, 34, 48]
    fp = next(r for r in runs if r.harness == "eager-eval" and r.method == "full_parallel")
    assert fp.branches == []
    lm = next(r for r in runs if r.harness == "lm-eval" and r.method == "eager_adapt")
    assert len(lm.branches) == 16 - 5  # n_sequences - 1 forks per doc in the fixture


def test_inspect_samples_give_per_prompt_stats(tmp_path):
    paths = write_inspect_fixtures(tmp_path)
    run = read_runs([paths["init"]]).runs[0]
    assert run.model == "HuggingFaceTB/SmolLM3-3B"  # the eager/ provider prefix dropped
    assert [p.n_sequences for p in run.prompts] == [1, 2, 3, 4]
    assert len(run.branches) == 6


def test_report_command_exit_code_and_files(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers())
    args = parser.parse_args(["report", str(EAGER_DEMO), "--output", str(tmp_path / "r")])
    assert args.func(args) == EXIT_OK
    assert {p.name for p in (tmp_path / "r").iterdir()} == {
        "leaderboard.md", "leaderboard.csv", "leaderboard.html", "accuracy_vs_tokens.png",
        "sequences_per_prompt.png", "branch_points.png"}
    assert "2 rows" in capsys.readouterr().out


def test_pareto_front():
    points = [(100, 0.5), (200, 0.7), (150, 0.4), (300, 0.7), (50, 0.2), (100, 0.5)]
    assert pareto_front(points) == [0, 1, 4, 5]


@pytest.mark.parametrize("model_args, expected", [
    ("pretrained=Qwen/Qwen3-4B,mode=eager_adapt,theta=2.0,max_seqs=4",
     {"pretrained": "Qwen/Qwen3-4B", "mode": "eager_adapt", "theta": 2.0, "max_seqs": 4}),
    ({"pretrained": "x", "theta": 2.5}, {"pretrained": "x", "theta": 2.5}),
    ('{"pretrained": "y"}', {"pretrained": "y"}),
    (None, {}),
])
def test_parse_model_args(model_args, expected):
    assert parse_model_args(model_args) == expected


def test_theta_inf_string_is_read_as_infinity(tmp_path):
    data = json.loads((EAGER_DEMO / "results.json").read_text())
    data["runs"][1]["settings"]["theta"] = "inf"
    for run in data["runs"]:
        run.pop("samples")
    (tmp_path / "results.json").write_text(json.dumps(data))
    runs = read_runs([tmp_path]).runs
    assert math.isinf(next(r for r in runs if r.method == "eager_adapt").theta)
    build_report([tmp_path], tmp_path / "out", warn=None)
    row = _row(read_csv(tmp_path / "out" / "leaderboard.csv"), "smollm2-135m", "eager_adapt", "demo")
    assert row["theta"] == "inf"


def test_report_and_show_import_no_sympy(tmp_path):
    """Grades are stored in the records: reading and reporting them never loads math-verify
    (and sympy under it, ~1 s); only grading does (answers.py imports it where it grades)."""
    import subprocess
    import sys

    code = (f"import sys; from eager_eval.frontends.cli.main import main; "
            f"assert main(['report', {str(EAGER_DEMO)!r}, '--output', {str(tmp_path / 'r')!r}]) == 0; "
            f"assert main(['show', {str(EAGER_DEMO)!r}]) == 0; "
            f"print(sorted(m for m in ('sympy', 'math_verify') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
