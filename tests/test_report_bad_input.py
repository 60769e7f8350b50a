"""Bad input never hides good runs: each problem is a warning (printed and at the bottom of the
Markdown), the readable runs are still reported, exit code 2 only when nothing was readable."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

import pytest
from test_report_helpers import EAGER_DEMO, LM_EVAL, inspect_log, made_up_record, read_csv

from eager_eval.report import EXIT_NOTHING_READABLE, EXIT_OK, add_report_parser
from eager_eval.report.build import build_report
from eager_eval.report.readers import read_runs


def _command(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers())
    args = parser.parse_args(["report", *argv])
    return args.func(args)


def _copy_demo(to: Path) -> Path:
    shutil.copytree(EAGER_DEMO, to)
    return to


def _warnings_section(md: str) -> str:
    return md.split("## Warnings", 1)[1]


def test_empty_directory_exits_2_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _command(str(tmp_path / "empty"), "--output", str(tmp_path / "out")) == EXIT_NOTHING_READABLE
    err = capsys.readouterr().err
    assert "empty: no result files (.json, .eval) found in this directory" in err
    assert "no readable runs" in err
    assert not (tmp_path / "out").exists()


def test_missing_path_and_only_bad_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.json").write_text('{"results": ')
    (bad / "other.json").write_text('{"hello": "world"}')
    code = _command(str(bad), str(tmp_path / "nope"), "--output", str(tmp_path / "out"))
    assert code == EXIT_NOTHING_READABLE
    err = capsys.readouterr().err
    assert "broken.json: invalid JSON (line 1" in err
    assert "other.json: not an eager-eval, lm-eval or Inspect result file; skipped" in err
    assert "nope: no such file or directory" in err


def test_bad_files_beside_good_runs_are_listed_and_good_runs_reported(tmp_path, capsys):
    runs = tmp_path / "runs"
    _copy_demo(runs / "demo")
    (runs / "broken.json").write_text("{not json")
    (runs / "notes.json").write_text(json.dumps([1, 2, 3]))
    (runs / "unfinished").mkdir()
    (runs / "unfinished" / "trees.jsonl").write_text('{"prompt_idx": 0}\n')
    explicit = tmp_path / "README.txt"
    explicit.write_text("not a result")
    code = _command(str(runs), str(explicit), "--output", str(tmp_path / "out"))
    assert code == EXIT_OK
    printed = capsys.readouterr()
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    warnings = _warnings_section(md)
    for expected in ("broken.json: invalid JSON", "notes.json: not an eager-eval, lm-eval or Inspect",
                     "unfinished: 1 JSONL file(s) (trees.jsonl, ...) but no results file",
                     "README.txt: not a result file"):
        assert expected in warnings
        assert expected in printed.err
    assert len(read_csv(tmp_path / "out" / "leaderboard.csv")) == 2
    assert "4 warnings" in printed.out


def test_same_run_twice_with_different_temperature_warns_and_keeps_both(tmp_path):
    first = _copy_demo(tmp_path / "a")
    second = _copy_demo(tmp_path / "b")
    data = json.loads((second / "results.json").read_text())
    for run in data["runs"]:
        run["settings"]["temperature"] = 1.0
    (second / "results.json").write_text(json.dumps(data))
    report = build_report([first, second], tmp_path / "out", warn=None)
    rows = read_csv(tmp_path / "out" / "leaderboard.csv")
    assert len(rows) == 4
    duplicate = [w for w in report.warnings if "appears 2 times" in w]
    assert len(duplicate) == 2  # Full Parallel and EAGer-adapt
    assert all("differ in temperature (0.7 vs 1)" in w for w in duplicate)
    shared = [w for w in report.warnings if "disagree on temperature" in w]
    assert len(shared) == 1 and "smollm2-135m on demo" in shared[0]
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "disagree on temperature" in _warnings_section(md)


def test_different_theta_is_a_separate_row_not_a_conflict(tmp_path):
    first = _copy_demo(tmp_path / "a")
    second = _copy_demo(tmp_path / "b")
    data = json.loads((second / "results.json").read_text())
    data["runs"] = [r for r in data["runs"] if r["method"] == "eager_adapt"]
    data["runs"][0]["settings"]["theta"] = 2.5
    (second / "results.json").write_text(json.dumps(data))
    report = build_report([first, second], tmp_path / "out", warn=None)
    assert report.warnings == []
    thetas = sorted(r["theta"] for r in read_csv(tmp_path / "out" / "leaderboard.csv")
                    if r["method"] == "eager_adapt")
    assert thetas == ["2.0", "2.5"]


def test_duplicate_with_same_settings_is_reported(tmp_path):
    report = build_report([_copy_demo(tmp_path / "a"), _copy_demo(tmp_path / "b")],
                          tmp_path / "out", warn=None)
    assert sum("appears 2 times, with the same settings" in w for w in report.warnings) == 2


def test_full_parallel_with_other_m_gives_no_savings(tmp_path):
    demo = _copy_demo(tmp_path / "a")
    data = json.loads((demo / "results.json").read_text())
    data["runs"][0]["settings"]["max_seqs"] = 8
    (demo / "results.json").write_text(json.dumps(data))
    report = build_report([demo], tmp_path / "out", warn=None)
    row = next(r for r in read_csv(tmp_path / "out" / "leaderboard.csv") if r["method"] == "eager_adapt")
    assert row["savings_vs_full_parallel"] == ""
    assert any("no comparable Full Parallel run (max_seqs 8 vs 4)" in w for w in report.warnings)


def test_full_parallel_over_other_prompts_gives_no_savings(tmp_path):
    """Same M and prompt count, other prompts (another data file or limit): no savings."""
    demo = _copy_demo(tmp_path / "a")
    data = json.loads((demo / "results.json").read_text())
    for entry, prompts in zip(data["runs"], ["a" * 64, "b" * 64, "b" * 64, "b" * 64]):
        entry["prompts_sha256"] = prompts
    assert data["runs"][0]["method"] == "full_parallel"
    (demo / "results.json").write_text(json.dumps(data))
    report = build_report([demo], tmp_path / "out", warn=None)
    rows = {r["method"]: r for r in read_csv(tmp_path / "out" / "leaderboard.csv")}
    assert rows["eager_adapt"]["savings_vs_full_parallel"] == ""
    assert any("no comparable Full Parallel run (other prompts" in w for w in report.warnings)


def test_missing_and_non_numeric_metrics_are_warnings(tmp_path, capsys):
    demo = _copy_demo(tmp_path / "a")
    data = json.loads((demo / "results.json").read_text())
    entry = next(e for e in data["runs"] if e["method"] == "eager_adapt")
    entry["metrics"]["pass_at_k"] = "n/a"
    del entry["metrics"]["cons_at_k"]
    (demo / "results.json").write_text(json.dumps(data))
    assert _command(str(demo), "--output", str(tmp_path / "out"), "--no-plots") == EXIT_OK
    err = capsys.readouterr().err
    assert "eager_adapt: pass_at_k is 'n/a', not a number; shown as —" in err
    assert "eager_adapt: no cons_at_k recorded; shown as —" in err
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "pass_at_k is 'n/a'" in _warnings_section(md), "not 'Warnings: None.'"


def test_missing_samples_file_is_a_warning_and_metrics_still_read(tmp_path):
    demo = _copy_demo(tmp_path / "a")
    (demo / "eager_adapt.jsonl").unlink()
    report = build_report([demo], tmp_path / "out", warn=None)
    assert any("samples file eager_adapt.jsonl is missing" in w for w in report.warnings)
    row = next(r for r in read_csv(tmp_path / "out" / "leaderboard.csv") if r["method"] == "eager_adapt")
    assert row["tokens_generated"] == "478" and row["seqs_max"] == "6"


def test_eager_eval_results_without_runs_is_unreadable(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(
        {"tool": "eager-eval", "format_version": 1, "model": "m", "task": "t", "runs": []}))
    found = read_runs([tmp_path])
    assert found.runs == []
    assert any("holds no runs" in w for w in found.warnings)


def test_lm_eval_file_without_eager_metrics_is_skipped(tmp_path):
    (tmp_path / "results_2025-01-01T00-00-00.json").write_text(json.dumps({
        "results": {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.5}},
        "config": {"model": "hf", "model_args": "pretrained=gpt2"}, "configs": {}}))
    found = read_runs([tmp_path])
    assert found.runs == []
    assert any("no task with EAGer metrics" in w for w in found.warnings)


FP_FILE = LM_EVAL / "Qwen__Qwen3-4B" / "results_2025-06-02T11-45-10.500000.json"


def _lm_eval_variant(tmp_path: Path, edit) -> Path:
    data = json.loads(FP_FILE.read_text())
    edit(data)
    path = tmp_path / FP_FILE.name
    path.write_text(json.dumps(data))
    return path


def test_lm_eval_tokens_without_aggregation_are_not_invented(tmp_path):
    def edit(data):
        del data["config"]["eager_eval"]["tasks"]  # no exact totals from the adapter
        data["configs"]["aime25"]["metric_list"] = []

    found = read_runs([_lm_eval_variant(tmp_path, edit)])
    assert "tokens_generated" not in found.runs[0].metrics
    assert any("tokens_generated has no recorded aggregation" in w for w in found.warnings)


def test_lm_eval_mean_aggregated_tokens_are_mean_times_prompts(tmp_path):
    def edit(data):
        del data["config"]["eager_eval"]["tasks"]
        result = data["results"]["aime25"]
        result["tokens_generated,all"] = 1500.0  # a per-prompt mean over 5 prompts
        data["configs"]["aime25"]["metric_list"][-2]["aggregation"] = "mean"

    run = read_runs([_lm_eval_variant(tmp_path, edit)]).runs[0]
    assert run.metrics["tokens_generated"] == 7500


def test_lm_eval_legacy_eager_key_and_none_filter(tmp_path):
    def edit(data):
        data["config"]["eager"] = data["config"].pop("eager_eval")
        data["results"]["aime25"] = {k.replace(",all", ",none"): v for k, v in data["results"]["aime25"].items()}

    run = read_runs([_lm_eval_variant(tmp_path, edit)]).runs[0]
    assert (run.method, run.metrics["pass_at_k"], run.metrics["tokens_generated"]) == ("full_parallel", 0.4, 7500)


def test_lm_eval_stock_hf_model_is_full_parallel_without_token_counts(tmp_path):
    """`lm_eval --model hf --tasks aime25 --include_path tasks`: repeats independent samples
    (the Full Parallel baseline), whose tokens the task cannot count (reported as 0)."""
    def edit(data):
        data["config"] = {"model": "hf", "model_args": "pretrained=Qwen/Qwen3-4B,dtype=bfloat16"}
        data["results"]["aime25"]["tokens_generated,all"] = 0

    found = read_runs([_lm_eval_variant(tmp_path, edit)])
    run = found.runs[0]
    assert (run.method, run.max_seqs, run.settings["temperature"], run.settings["max_new_tokens"]) == \
        ("full_parallel", 4, 0.6, 1024)
    assert "tokens_generated" not in run.metrics
    assert any("did not count generated tokens" in w for w in found.warnings)


def test_inspect_log_that_failed_is_skipped(tmp_path):
    from inspect_ai.log import write_eval_log

    log = inspect_log("eager/m", "aime25", {"mode": "eager_adapt"}, {"pass_at_k": 0.5}, status="error")
    write_eval_log(log, str(tmp_path / "failed.eval"))
    (tmp_path / "garbage.eval").write_bytes(b"not a zip file")
    found = read_runs([tmp_path])
    assert found.runs == []
    assert any("failed.eval: Inspect log status is 'error'" in w for w in found.warnings)
    assert any("garbage.eval: cannot read Inspect log" in w for w in found.warnings)


def test_warnings_are_printed_as_found(tmp_path):
    stream = io.StringIO()
    build_report([tmp_path / "missing"], tmp_path / "out", warn=stream)
    assert stream.getvalue().startswith("warning: ")


@pytest.mark.parametrize("content", ['{"tool": "eager-eval-sweep", "cells": []}'])
def test_sweep_manifest_is_skipped_quietly(tmp_path, content):
    _copy_demo(tmp_path / "cells" / "demo")
    (tmp_path / "cells" / "sweep.json").write_text(content)
    found = read_runs([tmp_path / "cells"])
    assert len(found.runs) == 2 and found.warnings == []


def test_resume_store_inside_a_run_directory_is_not_a_warning(tmp_path):
    demo = _copy_demo(tmp_path / "cell")
    (demo / "trees").mkdir()
    (demo / "trees" / "eager_adapt.jsonl").write_text('{"prompt_idx": 0}\n')
    found = read_runs([tmp_path])
    assert len(found.runs) == 2 and found.warnings == []


def test_cell_still_running_is_reported_as_unfinished(tmp_path):
    _copy_demo(tmp_path / "sweep" / "done")
    (tmp_path / "sweep" / "running" / "trees").mkdir(parents=True)
    (tmp_path / "sweep" / "running" / "trees" / "eager_init.jsonl").write_text("{}\n")
    found = read_runs([tmp_path / "sweep"])
    assert len(found.runs) == 2
    assert found.warnings == [f"{tmp_path / 'sweep' / 'running' / 'trees'}: 1 JSONL file(s) "
                              "(eager_init.jsonl, ...) but no results file: an unfinished or "
                              "interrupted run? skipped"]


def test_inspect_settings_logged_by_the_provider_win(tmp_path):
    from inspect_ai.log import write_eval_log

    logged = {"mode": "eager_adapt", "theta": 2.2, "max_seqs": 8, "temperature": 0.6, "seed": 3}
    log = inspect_log("eager/m", "aime25", {"theta": 2.2}, {"pass_at_k": 0.5},
                      samples=[made_up_record(0, 10, [(3, 2.5)], settings=logged)],
                      temperature=1.0)
    write_eval_log(log, str(tmp_path / "log.eval"))
    run = read_runs([tmp_path]).runs[0]
    assert (run.method, run.theta, run.max_seqs, run.settings["temperature"], run.settings["seed"]) == \
        ("eager_adapt", 2.2, 8, 0.6, 3)
