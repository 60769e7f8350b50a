"""A run killed at EVERY store line in turn resumes to the uninterrupted run, byte for byte.

Issue 20, item 3. For each N from 0 to the number of trees a run stores, the run dies after
its N-th tree line (and, for each N, also halfway through writing line N + 1: a torn line);
the same command with --resume then finishes it. The resumed run's records (`<method>.jsonl`,
docs/FORMAT.md) must be byte-identical to the uninterrupted run's, results.json's entries equal
but for their wall time and resumed-tree count, and the tree file must hold the same tree lines.

- The CLI (`eager-eval run --backend scripted --resume`), for eager_adapt (reallocation rounds)
  and full EAGer (rounds for the prompts graded wrong, labels in the fingerprint).
- `trees=DIR`, the lm-eval and Inspect path: `pipeline.pool.run_pool` over `store.TreesDir`.
- The death is an exception raised from the store's `put` (in-process, every N), and a real
  SIGKILL of a subprocess at a few N (no cleanup, no lock released but by the kernel).
- The tiny HF model through the CLI (slow): the same kill at every line.

The scripted engine (`engines/scripted.py`) is the shipped test engine: distributions are a
function of (prompt, tokens so far), so what a resumed run may differ in is only what the
pipeline does with the order and batching of trees, which is what is tested here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eager_eval.frontends.cli import main as cli
from eager_eval.pipeline.store import JsonlTreeStore

TESTS = Path(__file__).resolve().parent


class Killed(BaseException):
    """The run dies here (a BaseException: nothing on the way catches it, as nothing can catch
    a SIGKILL)."""


def _rows(count: int) -> list[dict]:
    """Math prompts ending in digits of both parities (the `mixed` script: calm or wild)."""
    return [{"id": f"q{i}", "problem": f"what is {i} + {i % 3}", "answer": str(i + i % 3)}
            for i in range(count)]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    """Choice questions: the prompt ends with choice D, whose last character decides the
    `mixed` script's mood (even: calm, never forks; odd: forks at most positions), so some
    prompts hit M and get EAGer-adapt's reallocated budget, and the others leave it."""
    path = tmp_path_factory.mktemp("kill-data") / "choice.csv"
    rows = ["id,question,A,B,C,D,answer"] + [
        f"c{i},which is {i}?,one,two,three,four {'ab'[i % 2]},{'ABCD'[i % 4]}" for i in range(6)]
    path.write_text("\n".join(rows) + "\n")
    return path


def cli_args(data: Path, out: Path, mode: str, *extra: str) -> list[str]:
    return ["run", "--backend", "scripted", "--model", "mixed", "--data", str(data),
            "--answer-type", "choice", "--output", str(out), "--mode", mode, "--max-seqs", "3",
            "--max-new-tokens", "16", "--seed", "7", "--theta", "1.2", "--percentile", "none",
            "--no-progress", *extra]


def run_cli(args: list[str]) -> int:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli.main(args)


# --- the kill -------------------------------------------------------------------------------


class KillAtLine:
    """Patch JsonlTreeStore.put: after `stored` tree lines, the next put dies; `torn`: having
    written the first half of its line (what a kill during the write leaves)."""

    def __init__(self, monkeypatch, stored: int, torn: bool = False):
        self.stored, self.torn, self.seen = stored, torn, 0
        original = JsonlTreeStore.put

        def put(store, tree):
            if (tree.prompt_idx, tree.round) in store._trees:
                return original(store, tree)  # the runner stores a round's trees again: no line
            if self.seen == self.stored:
                if self.torn:
                    line = json.dumps(tree.to_dict(), separators=(",", ":")).encode()
                    os.write(store._fd, line[:len(line) // 2])
                raise Killed
            self.seen += 1
            return original(store, tree)

        monkeypatch.setattr(JsonlTreeStore, "put", put)


def tree_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:]


def results_entries(out: Path) -> list[dict]:
    """results.json's entries without what differs by design after a resume: the wall time
    (of the rest only) and the count of trees read back."""
    data = json.loads((out / "results.json").read_text())
    return [{k: v for k, v in e.items() if k not in ("wall_seconds", "resumed_trees")}
            for e in data["runs"]]


def assert_same_run(out: Path, reference: Path, method: str) -> None:
    assert (out / f"{method}.jsonl").read_bytes() == (reference / f"{method}.jsonl").read_bytes()
    assert results_entries(out) == results_entries(reference)
    mine, theirs = tree_lines(out / "trees" / f"{method}.jsonl"), tree_lines(
        reference / "trees" / f"{method}.jsonl")
    assert sorted(mine) == sorted(theirs)  # the same lines (the order trees end may differ)


@pytest.fixture(scope="module")
def references(data_file, tmp_path_factory) -> dict[str, Path]:
    """The uninterrupted run of each mode."""
    out = {}
    for mode in ("eager_adapt", "eager"):
        directory = tmp_path_factory.mktemp(f"reference-{mode}")
        assert run_cli(cli_args(data_file, directory, mode)) == 0
        out[mode] = directory
    return out


@pytest.mark.parametrize("mode", ["eager_adapt", "eager"])
def test_the_cli_killed_at_every_store_line_resumes_to_the_same_records(
        mode, data_file, references, tmp_path, monkeypatch):
    reference = references[mode]
    n_trees = len(tree_lines(reference / "trees" / f"{mode}.jsonl"))
    rounds = json.loads((reference / "results.json").read_text())["runs"][0]["rounds"]
    assert len(rounds) > 1 and n_trees > 5  # reallocation rounds, a tree file worth killing in
    for stored in range(n_trees + 1):
        for torn in ([False, True] if stored < n_trees else [False]):
            out = tmp_path / f"{stored}-{'torn' if torn else 'clean'}"
            with monkeypatch.context() as patch:
                KillAtLine(patch, stored, torn)
                with pytest.raises(Killed) if stored < n_trees else _finishes():
                    run_cli(cli_args(data_file, out, mode))
            saved = tree_lines(out / "trees" / f"{mode}.jsonl")
            assert len(saved) == stored + torn  # the torn line is on disk, half-written
            with pytest.warns(RuntimeWarning, match="half-written") if torn else _finishes():
                assert run_cli(cli_args(data_file, out, mode, "--resume")) == 0, (stored, torn)
            assert_same_run(out, reference, mode)
            resumed = json.loads((out / "results.json").read_text())["runs"][0]["resumed_trees"]
            assert resumed == stored  # the trees before the kill were read back, not regrown


class _finishes:
    """Killing after the last line: nothing dies, the run ends."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- a real SIGKILL --------------------------------------------------------------------------

SIGKILL_AT = """
import json, os, signal, sys
from eager_eval.frontends.cli import main as cli
from eager_eval.pipeline.store import JsonlTreeStore
stored, torn = int(sys.argv[1]), sys.argv[2] == "torn"
seen, original = [0], JsonlTreeStore.put
def put(store, tree):
    if (tree.prompt_idx, tree.round) not in store._trees:
        if seen[0] == stored:
            if torn:
                line = json.dumps(tree.to_dict(), separators=(",", ":")).encode()
                os.write(store._fd, line[:len(line) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        seen[0] += 1
    return original(store, tree)
JsonlTreeStore.put = put
sys.exit(cli.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("stored, torn", [(0, False), (3, False), (4, True), (8, True)])
def test_a_sigkilled_cli_run_resumes_to_the_same_records(stored, torn, data_file, references,
                                                         tmp_path):
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", SIGKILL_AT, str(stored), "torn" if torn else "clean",
         *cli_args(data_file, out, "eager_adapt")],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / ".eager-eval.lock").exists()  # no cleanup ran: the kernel dropped the lock
    assert len(tree_lines(out / "trees" / "eager_adapt.jsonl")) == stored + torn
    with pytest.warns(RuntimeWarning, match="half-written") if torn else _finishes():
        assert run_cli(cli_args(data_file, out, "eager_adapt", "--resume")) == 0
    assert_same_run(out, references["eager_adapt"], "eager_adapt")


# --- trees=DIR: the lm-eval and Inspect path ----------------------------------------------------


def pool_run(trees_dir: Path, mode: str):
    """One pool through run_pool over TreesDir, as the lm-eval and Inspect front ends run it."""
    from eager_eval.core.config import EagerConfig
    from eager_eval.engines.registry import EngineOptions
    from eager_eval.engines.scripted import ScriptedEngine, mixed_script
    from eager_eval.pipeline.pool import Label, Pool, pool_prompt, run_pool
    from eager_eval.pipeline.prompts import ChatMode, Prompt, PromptEncoder, PromptSettings
    from eager_eval.pipeline.store import TreesDir

    engine = ScriptedEngine(mixed_script())
    settings = PromptSettings(ChatMode.OFF, True)
    encoder = PromptEncoder.for_engine(engine, settings, think_end=None)
    prompts = [pool_prompt(encoder, Prompt(r["problem"]), r["id"], label=Label(r["answer"], "math"))
               for r in _rows(6)]
    config = EagerConfig(mode=mode, max_seqs=3, max_new_tokens=16, seed=3, think_end=None,
                         theta=1.2, percentile=None)
    pool = Pool("lm_eval-t", prompts, config, "scripted", EngineOptions(backend="scripted"),
                settings)
    return run_pool(pool, engine, trees=TreesDir(trees_dir), harness="lm_eval")


def records_json(outcome) -> list[str]:
    return [json.dumps(r.to_dict(), sort_keys=True) for r in outcome.records]


@pytest.mark.parametrize("mode", ["eager_adapt", "eager"])
def test_trees_dir_killed_at_every_store_line_resumes_to_the_same_records(mode, tmp_path,
                                                                        monkeypatch):
    reference = pool_run(tmp_path / "reference", mode)
    (reference_file,) = (tmp_path / "reference").glob("*.jsonl")
    n_trees = len(tree_lines(reference_file))
    assert len(reference.result.rounds) > 1 and n_trees > 6
    for stored in range(n_trees):
        for torn in (False, True):
            directory = tmp_path / f"{stored}-{torn}"
            with monkeypatch.context() as patch:
                KillAtLine(patch, stored, torn)
                with pytest.raises(Killed):
                    pool_run(directory, mode)
            (path,) = directory.glob("*.jsonl")
            assert path.name == reference_file.name  # one fingerprint: the same file
            assert len(tree_lines(path)) == stored + torn
            with pytest.warns(RuntimeWarning, match="half-written") if torn else _finishes():
                resumed = pool_run(directory, mode)
            assert resumed.resumed_trees == stored
            assert records_json(resumed) == records_json(reference), (stored, torn)
            assert resumed.result.rounds == reference.result.rounds
            assert sorted(tree_lines(path)) == sorted(tree_lines(reference_file))


# --- the tiny HF model ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_tiny_hf_model_killed_at_every_store_line_resumes_to_the_same_records(
        data_file, tmp_path, tmp_path_factory, monkeypatch):
    sys.path.insert(0, str(TESTS))
    from support import save_tiny_word_model

    model = save_tiny_word_model(tmp_path_factory.mktemp("tiny") / "tiny")
    # its 10 words are near-uniform: top-5 entropies sit just under ln 5 = 1.6094, so theta
    # 1.609 grants some forks and not others, by margins of about 1e-4 (the risky case)

    def args(out: Path, *extra: str) -> list[str]:
        return ["run", "--model", str(model), "--data", str(data_file), "--answer-type",
                "choice", "--output", str(out),
                "--mode", "eager_adapt", "--max-seqs", "3", "--max-new-tokens", "12",
                "--entropy-k", "5", "--theta", "1.609", "--percentile", "none", "--temperature",
                "0.7", "--entropy-source", "processed", "--threads", "1", "--no-progress", *extra]

    reference = tmp_path / "reference"
    assert run_cli(args(reference)) == 0
    n_trees = len(tree_lines(reference / "trees" / "eager_adapt.jsonl"))
    rounds = json.loads((reference / "results.json").read_text())["runs"][0]["rounds"]
    print(f"tiny HF model: {n_trees} trees, {len(rounds)} rounds")
    assert n_trees > 5 and len(rounds) > 1
    for stored in range(n_trees):
        out = tmp_path / f"{stored}"
        with monkeypatch.context() as patch:
            KillAtLine(patch, stored)
            with pytest.raises(Killed):
                run_cli(args(out))
        assert run_cli(args(out, "--resume")) == 0
        assert_same_run(out, reference, "eager_adapt")
