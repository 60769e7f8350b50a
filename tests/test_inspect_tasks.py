"""Pins tasks/gpqa.py and tasks/aime25.py, and the real `inspect eval` command line (slow).

GPQA questions are never committed: every GPQA test writes made-up GPQA-shaped rows. The slow
tests run `inspect eval` in a subprocess, offline, on (a) a tiny random-weight Llama that uses
the embedded SmolLM2 tokenizer and (b) SmolLM2-135M itself, and read the JSON log as
`inspect view` would show it.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eager_eval.pipeline.datasets import DataFileError, load_aime25, load_gpqa_diamond
from support import needs_smollm2, save_tiny_llama_with_smollm2_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METRICS = ["pass_at_k", "pass_at_1", "cons_at_k", "pass_rate", "tokens_generated", "n_sequences",
           "conf_cons_at_k", "top10_cons_at_k", "top90_cons_at_k"]  # the last three: docs/CONFIDENCE.md
INSPECT = str(Path(sys.executable).with_name("inspect"))


def write_gpqa_fixture(directory: Path, n: int = 4) -> Path:
    """Made-up questions in the public GPQA CSV's columns (never real GPQA content)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gpqa_diamond.csv"
    columns = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1",
               "Incorrect Answer 2", "Incorrect Answer 3"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for i in range(n):
            writer.writerow({"Record ID": f"rec{i}",
                             "Question": f"Which made-up colour of set {i} is the blue one?",
                             "Correct Answer": f"blue {i}", "Incorrect Answer 1": f"red {i}",
                             "Incorrect Answer 2": f"green {i}", "Incorrect Answer 3": f"grey {i}"})
    return path


def write_aime_fixture(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "aime25.jsonl"
    rows = [{"id": "p1", "problem": "What is 2 + 3?", "answer": "5"},
            {"id": "p2", "problem": "What is half of 1?", "answer": "\\frac{1}{2}"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def load_task_file(name: str):
    spec = importlib.util.spec_from_file_location(f"eager_task_{name}", REPO / "tasks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the tasks -------------------------------------------------------------------------------


def test_gpqa_task_uses_the_shared_loader_prompts_and_choice_order(tmp_path, monkeypatch):
    write_gpqa_fixture(tmp_path)
    monkeypatch.setenv("EAGER_EVAL_DATA_DIR", str(tmp_path))
    task = load_task_file("gpqa").gpqa_diamond()
    questions = load_gpqa_diamond()
    samples = list(task.dataset)
    assert [s.input for s in samples] == [q.prompt for q in questions]
    assert [s.target for s in samples] == [q.answer for q in questions]
    assert [s.metadata["choices"] for s in samples] == [list(q.choices) for q in questions]
    assert len({s.target for s in samples}) > 1  # the fixed shuffle moves the right answer
    assert "\\boxed{}" in samples[0].input
    assert [s.metadata["choices"] for s in load_task_file("gpqa").gpqa_diamond().dataset] == \
        [s.metadata["choices"] for s in samples]  # same order every time


def test_aime25_task_reads_the_local_jsonl(tmp_path, monkeypatch):
    write_aime_fixture(tmp_path)
    monkeypatch.setenv("EAGER_EVAL_DATA_DIR", str(tmp_path))
    samples = list(load_task_file("aime25").aime25().dataset)
    assert [s.id for s in samples] == ["p1", "p2"]
    assert [s.input for s in samples] == [p.prompt for p in load_aime25()]
    assert [s.target for s in samples] == ["5", "\\frac{1}{2}"]


@pytest.mark.parametrize("name, fn, file", [("gpqa", "gpqa_diamond", "gpqa_diamond.csv"),
                                            ("aime25", "aime25", "aime25.jsonl")])
def test_missing_data_file_offline_is_a_clear_error(tmp_path, monkeypatch, name, fn, file):
    monkeypatch.setenv("EAGER_EVAL_DATA_DIR", str(tmp_path))
    with pytest.raises(DataFileError, match=f"EAGER_EVAL_DATA_DIR={tmp_path} has no {file}"):
        getattr(load_task_file(name), fn)()


@pytest.mark.slow  # an `inspect eval` subprocess
@needs_smollm2
def test_missing_gpqa_is_one_message_before_the_model_loads(tmp_path, monkeypatch):
    """`inspect eval` builds the model before the task: the provider loads no weights until
    the first batch, and the task's missing CSV is one message, where it comes from included."""
    monkeypatch.setenv("COLUMNS", "1000")  # one line on the terminal: no wraps inside the path
    done = inspect_eval_cli(["tasks/gpqa.py", "--model", "eager/smollm2-135m"], tmp_path,
                            timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in out and "Loading weights" not in out
    (text,) = [line for line in out.splitlines() if line.strip()]
    assert text.startswith("eager-eval: error: ")
    assert f"EAGER_EVAL_DATA_DIR={tmp_path} has no gpqa_diamond.csv" in text
    assert "https://openaipublic.blob.core.windows.net/simple-evals/gpqa_diamond.csv" in text
    assert "columns Question, Correct Answer, Incorrect Answer 1" in text


# --- the real command line (slow) ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_llama_with_smollm2_tokenizer(tmp_path_factory.mktemp("tiny-smollm2-llama"))


def inspect_eval_cli(args: list[str], data_dir: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EAGER_EVAL_DATA_DIR": str(data_dir)}
    # One torch thread: on a shared 2-core runner, spinning OpenMP threads made SmolLM2 ~8x slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([INSPECT, "eval", *args, "--display", "plain"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_json_log(log_dir: Path) -> dict:
    (path,) = log_dir.glob("*.json")
    return json.loads(path.read_text(encoding="utf-8"))


def check_samples_show_sequences_and_statistics(log: dict, epochs: int = 1) -> None:
    """What `inspect view` renders per sample: every sequence (choices) and the statistics.
    With epochs, Inspect's default reducer averages each sample's epochs: #T per epoch."""
    from eager_eval.pipeline.record import PromptRecord

    records = []
    for sample in log["samples"]:
        output = sample["output"]
        record = PromptRecord.from_dict(output["metadata"])  # the one prompt record
        records.append(record)
        assert len(output["choices"]) == record.n_sequences >= 1
        assert output["usage"]["output_tokens"] == record.tokens_generated
        assert record.tokens_generated <= record.tokens_in_outputs
        assert record.trees and record.pool and record.settings and record.is_graded
        assert all(s.tokens for s in record.sequences)
        assert sample["scores"]["eager_scorer"]["value"]["n_sequences"] == record.n_sequences
        assert sample["scores"]["eager_scorer"]["value"]["pass_at_1"] == pytest.approx(
            record.n_correct / record.n_sequences)  # the scorer counted the stored grades
    metrics = log["results"]["scores"][0]["metrics"]
    assert list(metrics) == METRICS
    assert metrics["tokens_generated"]["value"] == pytest.approx(
        sum(r.tokens_generated for r in records) / epochs)


@pytest.mark.slow
@needs_smollm2
def test_inspect_eval_command_on_a_tiny_model_pools_the_whole_task(tiny_model_dir, tmp_path):
    """No pooling flags: the 3 samples x 2 epochs are one pool (tests/test_inspect_pool.py
    pins the same on 70+ calls in-process)."""
    data_dir, log_dir = tmp_path / "data", tmp_path / "logs"
    write_gpqa_fixture(data_dir)
    done = inspect_eval_cli(
        ["tasks/gpqa.py", "--model", f"eager/{tiny_model_dir}", "-M", "max_seqs=4", "-M", "seed=1",
         "--limit", "3", "--epochs", "2", "--max-tokens", "16", "--log-dir", str(log_dir),
         "--log-format", "json"], data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    log = read_json_log(log_dir)
    assert log["status"] == "success"
    assert log["eval"]["model_args"] == {"max_seqs": 4, "seed": 1}
    assert len(log["samples"]) == 6
    check_samples_show_sequences_and_statistics(log, epochs=2)
    pools = [dict(s["output"]["metadata"]["pool"]) for s in log["samples"]]
    assert sorted(pool.pop("index") for pool in pools) == list(range(6))
    assert pools[0]["n_prompts"] == 6 and pools[1:] == pools[:-1]  # one pool, one run
    from eager_eval.report.trees import load_runs

    (trees,) = load_runs(log_dir)  # what `eager-eval show` and the drill-down read
    assert [len(p.sequences) for p in trees.prompts] == [
        len(s["output"]["metadata"]["sequences"]) for s in log["samples"]]
    assert all(f.context is not None for p in trees.prompts for f in p.forks)
    settings = log["samples"][0]["output"]["metadata"]["settings"]
    assert (settings["max_seqs"], settings["seed"], settings["max_new_tokens"]) == (4, 1, 16)


@pytest.mark.slow
def test_inspect_eval_command_rejects_an_unknown_option(tmp_path):
    write_gpqa_fixture(tmp_path)
    done = inspect_eval_cli(["tasks/gpqa.py", "--model", "eager/smollm2-135m", "-M", "max_seq=4",
                             "--limit", "1", "--log-dir", str(tmp_path / "logs")], tmp_path)
    assert done.returncode != 0
    assert "unknown -M option of the eager provider 'max_seq' (did you mean 'max_seqs'?)" in (
        done.stdout + done.stderr)


@pytest.mark.slow
@needs_smollm2
def test_the_documented_smollm2_command_runs_offline(tmp_path):
    data_dir, log_dir = tmp_path / "data", tmp_path / "logs"
    write_gpqa_fixture(data_dir)
    started = time.perf_counter()
    done = inspect_eval_cli(
        ["tasks/gpqa.py", "--model", "eager/smollm2-135m", "-M", "max_seqs=4", "-M", "seed=1",
         "--limit", "3", "--max-tokens", "48", "--log-dir", str(log_dir), "--log-format", "json"],
        data_dir, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    log = read_json_log(log_dir)
    assert log["status"] == "success" and len(log["samples"]) == 3
    check_samples_show_sequences_and_statistics(log)
    print(f"smollm2 inspect eval: {time.perf_counter() - started:.1f} s")
