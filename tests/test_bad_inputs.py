"""Pins docs/RELIABILITY.md: every bad input in tests/bad_inputs.py ends as its row says.

eager-eval's own commands run in-process: exit code, one `eager-eval: error: ...` line holding
the case's key words, no traceback, and nothing written into the output directory by a start
that failed. lm-eval and Inspect own their command lines (exit 1 and a traceback): there the
clear line must come first, and a task's missing data must stop the run before a model loads
(slow: each is a subprocess). Plus: two runs into one directory cannot both succeed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import CASES, ERROR, Workspace, case_words, run, run_case
from faults import Unavailable

from eager_eval.frontends.cli import main as cli
from eager_eval.common.files import LOCK_NAME, OutputLock
from eager_eval.pipeline.store import JsonlTreeStore
from support import needs_smollm2


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("bad-inputs") / "W")


@pytest.mark.parametrize("case", [c for c in CASES if c.in_process], ids=lambda c: c.id)
def test_bad_input_gives_one_clear_line(case, workspace, tmp_path):
    out = tmp_path / "out"
    try:
        seen = run_case(case, workspace, out, in_process=True)
    except Unavailable as why:
        pytest.skip(f"this machine cannot make the fault: {why}")
    assert seen.exit_code == case.exit_code, seen.stderr
    assert "Traceback" not in seen.stderr
    words = case_words(case, workspace, out)
    line = seen.line(words)
    assert line is not None and all(word in line for word in words), seen.stderr + seen.stdout
    errors = [text for text in seen.stderr.splitlines() if ERROR in text]
    if case.exit_code == 2:
        assert len(errors) == 1 and errors[0].startswith(ERROR), seen.stderr
        if case.keeps:  # a fault mid-run: what was written before it stays, whole
            assert seen.kept and None not in seen.kept.values(), seen.kept
        else:
            assert not seen.wrote, f"a start that failed wrote {seen.wrote}"
    elif case.exit_code == 0:
        assert not errors, seen.stderr


@pytest.fixture(scope="module")
def harness_workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("bad-harness-inputs") / "W", chat_model=True)


@pytest.mark.slow
@needs_smollm2
@pytest.mark.parametrize("case", [c for c in CASES if not c.in_process and c.in_suite],
                         ids=lambda c: c.id)
def test_harness_logs_the_clear_line_before_its_traceback(case, harness_workspace, tmp_path):
    seen = run_case(case, harness_workspace, tmp_path / "out", in_process=False)
    assert seen.exit_code == case.exit_code, seen.stderr[-3000:]
    first = seen.stderr.find(ERROR)
    assert first >= 0, seen.stderr[-3000:]
    assert "Traceback" not in seen.stderr[:first], "the clear line comes before any traceback"
    words = case_words(case, harness_workspace, tmp_path / "out")
    line = seen.line(words)
    assert line is not None and all(word in line for word in words), seen.stderr[-3000:]
    if "CSV" in case.what:
        assert "Loading weights" not in seen.stderr, "data is checked before a model loads"


# --- two runs into one directory ---------------------------------------------------------------


def _tiny_run(workspace: Workspace, out: Path, *extra: str) -> list[str]:
    return [workspace.fill(a, out) for a in run("--mode", "eager_init", *extra)]


@pytest.mark.parametrize("resume", [False, True], ids=["start-over", "resume"])
def test_a_second_run_into_a_directory_in_use_stops_and_the_first_finishes(
        workspace, tmp_path, monkeypatch, capsys, resume):
    """The second run starts while the first is between two trees; it must stop at once
    (exit 2, naming the directory and the holder's pid) and leave the first run's trees and
    results whole. Before the lock, both exited 0 and the second deleted the first's trees."""
    out = tmp_path / "out"
    second: dict[str, object] = {}
    original = JsonlTreeStore.put

    def put_then_start_the_second(store, tree):
        original(store, tree)
        if not second:
            second["code"] = cli.main(_tiny_run(workspace, out, "--seed", "1",
                                                *(["--resume"] if resume else [])))
            second["err"] = capsys.readouterr().err

    monkeypatch.setattr(JsonlTreeStore, "put", put_then_start_the_second)
    assert cli.main(_tiny_run(workspace, out)) == 0
    assert second["code"] == 2
    error = [line for line in str(second["err"]).splitlines() if ERROR in line]
    assert error == [f"{ERROR} output directory {out} is in use by another eager-eval run "
                     f"(pid {os.getpid()}); wait for it to end, or use another --output directory"]
    results = json.loads((out / "results.json").read_text())
    assert [r["settings"]["seed"] for r in results["runs"]] == [0], "the first run's results"
    trees = (out / "trees" / "eager_init.jsonl").read_text().splitlines()
    assert len(trees) == 1 + 4 and json.loads(trees[0])["fingerprint"]["settings"]["seed"] == 0
    assert not (out / LOCK_NAME).exists(), "the lock file goes with the run"


def test_a_run_waits_for_no_lock_of_a_killed_run(workspace, tmp_path):
    """A lock dies with its process: a run started after `kill -9` of the holder goes ahead."""
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from eager_eval.common.files import OutputLock; "
         "lock = OutputLock(sys.argv[1]).__enter__(); print('held', flush=True); time.sleep(60)",
         str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match=f"in use by another eager-eval run \\(pid {holder.pid}\\)"):
            OutputLock(out).__enter__()
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_NAME).exists(), "a killed holder leaves its lock file behind"
    assert cli.main(_tiny_run(workspace, out)) == 0
