"""The bad inputs of docs/RELIABILITY.md: one table, run by the tests and by this script.

Each `Case` is one command a user could type with one thing wrong in it, the exit code it must
end with and the key words its one clear line must hold. `tests/test_bad_inputs.py` runs the
eager-eval cases in-process (fast) and the lm-eval / Inspect ones as subprocesses (slow);

    python tests/bad_inputs.py > /tmp/table.md

runs every case as a user would (a subprocess each, ~5 min on 2 cores) and prints the table of
what it observed: exit code, the clear line, whether a traceback followed it, whether anything
was written. docs/RELIABILITY.md holds that output.

Paths in a case are placeholders filled from a `Workspace` (`{W}` its root, `{out}` the case's
own output directory, `{tiny}` a 10-word model with a 128-token context, `{chatmodel}` a tiny
model with SmolLM2's tokenizer, `{repo}` this checkout, `{pid}` the process holding a lock).

Operating-system faults (a full disk, a read-only file system, a file that cannot be read) are
made by the kernel (tests/faults.py) where this machine allows it; a case that cannot be made
here is skipped, and the table says so. A fault after the run started (`Case.keeps`) must leave
what was written before it whole. A case with an in-process hook (`Case.hook`: a fault at one
moment of a run) runs in-process in the script too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ERROR = "eager-eval: error:"


@dataclass(frozen=True)
class Case:
    surface: str
    """Where the bad input goes: run, demo, data, report, sweep, lm-eval, inspect."""
    what: str
    """The bad input, in words."""
    argv: tuple[str, ...]
    """The command after the program, with {placeholders}."""
    exit_code: int
    words: tuple[str, ...]
    """Key words of the clear line (or, for exit code 0, of the warning)."""
    program: str = "eager-eval"
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[["Workspace", Path], object] | None = None
    """Prepares the case's output directory (a finished run, a held lock); may return a
    context manager the case runs inside."""
    in_suite: bool = True
    """Run by the test suite. Most harness cases are not (a subprocess each, ~15 s for lm-eval):
    their checks are tested in-process (test_lm_eval_models, test_inspect_provider); the suite
    runs one of each kind as a user would, and this script runs them all."""
    keeps: bool = False
    """A fault after the run started: files written before it stay (and stay whole), where a
    bad input found before the start writes nothing."""
    hook: bool = False
    """The setup patches this process (a fault at one moment of a run): runs in-process even in
    the script."""
    id: str = ""

    @property
    def in_process(self) -> bool:
        return self.program == "eager-eval"


# --- the workspace --------------------------------------------------------------------------


class Workspace:
    """Every file the cases read: models, data files, results, sweep configs."""

    def __init__(self, root: Path, *, chat_model: bool = False):
        self.root = root
        self.tiny = root / "tiny"
        self.chatmodel = root / "chatmodel"
        if not self.tiny.exists():
            self._write(chat_model)
        elif chat_model and not self.chatmodel.exists():
            self._write_chat_model()
        if not (root / "more").exists():
            self._write_more()

    def fill(self, text: str, out: Path) -> str:
        return text.format(W=self.root, out=out, tiny=self.tiny, chatmodel=self.chatmodel,
                           repo=REPO, pid=os.getpid())

    def _write(self, chat_model: bool) -> None:
        from support import save_tiny_word_model

        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        save_tiny_word_model(self.tiny)
        if chat_model:
            self._write_chat_model()
        rows = [{"id": f"p{i}", "problem": f"what is {i} + 4", "answer": str(i + 4)}
                for i in range(3, 7)]
        _jsonl(root / "math.jsonl", rows)
        _jsonl(root / "long.jsonl", [{"id": "long-1", "problem": "the " * 200, "answer": "7"}])
        (root / "empty.jsonl").write_text("")
        (root / "broken.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n{"problem": \n')
        _jsonl(root / "question.jsonl", [{"question": "1+1?", "answer": "2"}])
        (root / "latin1.jsonl").write_bytes('{"problem": "caf\xe9", "answer": "1"}\n'.encode("latin-1"))
        (root / "notes.txt").write_text("problem,answer\n1+1,2\n")
        (root / "cols.csv").write_text("question,A,B,answer\nWhich?,x,y,A\n")
        (root / "letter.csv").write_text("question,A,B,C,D,answer\nWhich?,w,x,y,z,E\n")
        (root / "empty.gguf").write_bytes(b"")
        (root / "corrupt.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
        (root / "model.txt").write_text("not a model\n")
        (root / "nomodel").mkdir()
        (root / "a_file").write_text("a file, not a directory\n")
        (root / "emptydir").mkdir()
        (root / "no-gpqa").mkdir()
        _jsonl(root / "aime" / "aime25.jsonl", [{"id": "a1", "problem": "What is 2 + 3?",
                                                  "answer": "5"}])
        self._write_results(root / "results-gaps", {"pass_at_k": "n/a", "tokens_generated": 40})
        (root / "results-corrupt").mkdir()
        (root / "results-corrupt" / "results.json").write_text('{"tool": "eager-eval", "runs": [')
        self._write_sweeps()

    def _write_chat_model(self) -> None:
        from support import save_tiny_llama_with_smollm2_tokenizer

        save_tiny_llama_with_smollm2_tokenizer(self.chatmodel)

    def _write_results(self, directory: Path, metrics: dict) -> None:
        """An eager-eval run directory whose metrics lack most names and hold one as text."""
        directory.mkdir(parents=True)
        entry = {"method": "eager_adapt", "settings": {"theta": 2.0, "max_seqs": 4},
                 "metrics": metrics, "savings_vs_full_parallel": None}
        results = {"tool": "eager-eval", "format_version": 1, "model": "m", "task": "t",
                   "runs": [entry]}
        (directory / "results.json").write_text(json.dumps(results))

    def _write_sweeps(self) -> None:
        root = self.root
        cell = (f"models: [{self.tiny}]\ntasks: [{root / 'math.jsonl'}]\nmodes: [eager_init]\n"
                "max_seqs: 2\nmax_new_tokens: 4\nentropy_k: 5\nreport: false\n")
        (root / "sweep-theta.yaml").write_text(cell + "theta: -1\n")
        (root / "sweep-key.yaml").write_text(cell + "thetta: 2\n")
        (root / "sweep-yaml.yaml").write_text("models: [m\n")
        (root / "sweep-ok.yaml").write_text(cell)
        (root / "sweep-cuda.yaml").write_text(cell + "run_args: {device: cuda}\n")


    def _write_more(self) -> None:
        """The files of the cases of issue 20: odd data, models without a tokenizer, results
        of another shape, hand-edited results, sweep configs of the wrong types."""
        import shutil as _shutil

        root = self.root
        more = root / "more"
        more.mkdir()
        row = {"id": "p1", "problem": "what is 1 + 4", "answer": "5"}
        _jsonl(more / "dup-ids.jsonl", [row, {**row, "problem": "what is 2 + 4", "answer": "6"}])
        _jsonl(more / "answer-list.jsonl", [{**row, "answer": [1, 2]}])
        _jsonl(more / "answer-bool.jsonl", [{**row, "answer": True}])
        (more / "answer-nan.jsonl").write_text('{"id": "p1", "problem": "1 + 4", "answer": NaN}\n')
        _jsonl(more / "problem-object.jsonl", [{**row, "problem": {"text": "what is 1 + 4"}}])
        (more / "dup-key.jsonl").write_text(
            '{"id": "p1", "problem": "what is 1 + 4", "answer": "5", "answer": "6"}\n')
        (more / "extra-cells.csv").write_text("problem,answer\nwhat is 1 + 4,5,6\n")
        (more / "short-row.csv").write_text("problem,answer,level\nwhat is 1 + 4\n")
        (more / "empty-name.csv").write_text("problem,,answer\nwhat is 1 + 4,x,5\n")
        (more / "dup-name.csv").write_text("problem,answer,answer\nwhat is 1 + 4,5,6\n")
        (more / "array-line.jsonl").write_text('["what is 1 + 4", "5"]\n')
        _jsonl(more / "id-list.jsonl", [{**row, "id": [1]}])
        _jsonl(more / "same-problem.jsonl", [row, {**row, "id": "p2"}])
        _jsonl(more / "one.jsonl", [row])
        _jsonl(more / "big.jsonl", [{"id": f"q{i}", "problem": f"what is {i} + 4",
                                     "answer": str(i + 4)} for i in range(40)])
        (more / "a-directory.jsonl").mkdir()
        aime = [{"id": "a1", "problem": "What is 2 + 3?", "answer": "5"},
                {"id": "a1", "problem": "What is 2 + 4?", "answer": "6"}]
        _jsonl(more / "aime-dup" / "aime25.jsonl", aime)
        for name, drop, broken in (("notok", ("tokenizer.json", "tokenizer_config.json"), None),
                                   ("badtok", (), "tokenizer.json")):
            _shutil.copytree(self.tiny, more / name)
            for file in drop:
                (more / name / file).unlink(missing_ok=True)
            if broken:
                (more / name / broken).write_text('{"version": ')
        self._write_hand_edited(more)
        self._write_bad_sweeps(more)

    def _write_hand_edited(self, more: Path) -> None:
        """eager-eval run directories whose results.json a person edited, one thing each, and
        results.json files an output directory may hold that are not a run's."""
        entry = {"method": "eager_adapt", "settings": {"theta": 2.0, "max_seqs": 4},
                 "metrics": {"n_prompts": 2, "pass_at_k": 0.5, "cons_at_k": 0.5,
                             "pass_rate": 0.5, "tokens_generated": 40},
                 "savings_vs_full_parallel": None}
        edits = {
            "settings-list": {"settings": [2.0, 4]},
            "rounds-garbage": {"rounds": [{"round": "x", "allotments": {"a": "b"}}]},
            "theta-text": {"settings": {"theta": "abc", "max_seqs": 4}},
            "rate-above-1": {"metrics": {**entry["metrics"], "pass_at_k": 7.5}},
            "negative-count": {"metrics": {**entry["metrics"], "n_prompts": -3}},
            "samples-outside": {"samples": "../../../etc/passwd"},
            "unknown-method": {"method": "beam"},
            "savings-text": {"savings_vs_full_parallel": "big"},
        }
        for name, change in edits.items():
            directory = more / "edited" / name
            directory.mkdir(parents=True)
            results = {"tool": "eager-eval", "format_version": 1, "model": "m", "task": "t",
                       "runs": [{**entry, **change}]}
            (directory / "results.json").write_text(json.dumps(results))
        directory = more / "edited" / "model-list"
        directory.mkdir(parents=True)
        (directory / "results.json").write_text(json.dumps(
            {"tool": "eager-eval", "format_version": 1, "model": ["m"], "task": "t",
             "runs": [entry]}))

    def _write_bad_sweeps(self, more: Path) -> None:
        cell = (f"tasks: [{self.root / 'math.jsonl'}]\nmodes: [eager_init]\nmax_seqs: 2\n"
                "max_new_tokens: 4\nreport: false\nrun_args: {backend: scripted}\n")
        configs = {
            "model-number": "models: [5]\n" + cell,
            "model-mapping": "models: [{name: m}]\n" + cell,
            "model-null": "models: [null]\n" + cell,
            "task-missing": (f"models: [mixed]\ntasks: [{more / 'gone.jsonl'}]\n"
                             "modes: [eager_init]\n"),
            "task-dup-ids": (f"models: [mixed]\ntasks: [{more / 'dup-ids.jsonl'}]\n"
                             "modes: [eager_init]\n"),
            "output-number": "models: [mixed]\noutput: 5\n" + cell,
            "report-text": "models: [mixed]\n" + cell.replace("report: false", "report: maybe"),
            "resume-false": "models: [mixed]\n" + cell.replace(
                "{backend: scripted}", "{backend: scripted, resume: false}"),
            "run-arg-unknown": "models: [mixed]\n" + cell.replace(
                "{backend: scripted}", "{backend: scripted, thetta: 2}"),
            "run-arg-setting": "models: [mixed]\n" + cell.replace(
                "{backend: scripted}", "{backend: scripted, temperature: 0.5}"),
            "million": ("models: [" + ", ".join(f"m{i}" for i in range(100)) + "]\n"
                        "tasks: [" + ", ".join(f"t{i}.jsonl" for i in range(100)) + "]\n"
                        "modes: [eager_init, eager_adapt]\n"
                        "theta: [" + ", ".join(f"{1 + i / 100:g}" for i in range(100)) + "]\n"
                        "max_seqs: [2, 4, 8, 16, 32]\n"),
        }
        for name, text in configs.items():
            (more / f"sweep-{name}.yaml").write_text(text)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# --- what some cases need first -----------------------------------------------------------


def finished_run(ws: Workspace, out: Path, mode: str = "eager_init", *extra: str) -> None:
    """A finished tiny run in `out` (for a resume from other settings, a second method)."""
    import contextlib
    import io

    from eager_eval.frontends.cli import main as cli

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main([ws.fill(a, out) for a in run("--mode", mode, *extra)])
    assert code == 0, f"the set-up run into {out} failed"


def full_parallel_on_2_prompts(ws: Workspace, out: Path) -> None:
    finished_run(ws, out, "full_parallel", "--limit", "2")


def held_lock(ws: Workspace, out: Path):
    """The output directory locked by this process, as a running eager-eval holds it."""
    from eager_eval.common.files import OutputLock

    return OutputLock(out)


def _fault(make: Callable[[Path], Path], name: str):
    """A setup making the fault file W/more/faults/<name> once (Unavailable: not here)."""

    def setup(ws: Workspace, out: Path) -> None:
        path = ws.root / "more" / "faults" / name
        if not path.is_symlink() and not path.exists():
            make(path)

    return setup


def _unreadable(path: Path) -> Path:
    from faults import unreadable_file

    return unreadable_file(path)


def _io_error(path: Path) -> Path:
    from faults import io_error_file

    return io_error_file(path)


def _loop(path: Path) -> Path:
    from faults import symlink_loop

    return symlink_loop(path)


def fault_in_output(name: str, make: Callable[[Path], Path]):
    """A setup making the fault file OUT/<name> (a tree file, a results.json)."""

    def setup(ws: Workspace, out: Path) -> None:
        make(out / name)

    return setup


def small_disk(size: int):
    """A setup mounting a tmpfs of `size` bytes as the case's output directory."""

    def setup(ws: Workspace, out: Path):
        from faults import small_disk as mount

        return mount(out, size)

    return setup


def read_only_output(ws: Workspace, out: Path):
    """The output directory on a read-only file system (bind-mounted read-only)."""
    from faults import read_only

    return read_only(out)


def read_only_before_results(ws: Workspace, out: Path):
    """The output directory turns read-only once every tree is on disk, before results.json
    and <method>.jsonl are written: a real EROFS from the kernel (bind mount), at that moment
    (a hook in this process)."""
    import contextlib

    from eager_eval.pipeline import outputs

    from faults import remounted_read_only

    @contextlib.contextmanager
    def hooked():
        original = outputs.write_run_dir
        stack = ExitStack()

        def read_only_then_write(out_dir, *args, **kwargs):
            stack.enter_context(remounted_read_only(Path(out_dir)))
            return original(out_dir, *args, **kwargs)

        outputs.write_run_dir = read_only_then_write
        try:
            with stack:
                yield
        finally:
            outputs.write_run_dir = original

    return hooked()


def read_only_at_the_third_tree(ws: Workspace, out: Path):
    """A file system turning read-only under a run, at its third tree write: the store's
    os.write raises EROFS (simulated: a mounted file system cannot turn read-only while the
    store holds its file open for writing, which it does for the run's life)."""
    import contextlib
    import errno

    from eager_eval.pipeline import store

    trees = str(out / "trees")

    @contextlib.contextmanager
    def hooked():
        real_write, calls = os.write, [0]

        def write(fd, data):
            if not os.readlink(f"/proc/self/fd/{fd}").startswith(trees):
                return real_write(fd, data)
            calls[0] += 1
            if calls[0] >= 3:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return real_write(fd, data)

        store.os.write = write  # os.write, for this process, while the case runs
        try:
            yield
        finally:
            store.os.write = real_write

    return hooked()


def results_file(text: str):
    """A setup writing `text` as the output directory's results.json."""

    def setup(ws: Workspace, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(text)

    return setup


def other_task_run(ws: Workspace, out: Path) -> None:
    """A finished run of another task (more/one.jsonl) in the output directory."""
    finished_run(ws, out, "eager_init", "--data", "{W}/more/one.jsonl")


def kept_run_without_metrics(ws: Workspace, out: Path) -> None:
    """A finished full_parallel run whose results.json entry lost its metrics (hand-edited)."""
    finished_run(ws, out, "full_parallel", "--limit", "2")
    path = out / "results.json"
    data = json.loads(path.read_text())
    del data["runs"][0]["metrics"]
    path.write_text(json.dumps(data))


RUN_TINY = ("--model", "{tiny}", "--data", "{W}/math.jsonl", "--output", "{out}", "--max-seqs",
            "2", "--max-new-tokens", "4", "--entropy-k", "5", "--no-progress")
"""A run that works: each case changes one thing of it."""


def run(*changes: str, drop: tuple[str, ...] = ()) -> tuple[str, ...]:
    """`run` with the working arguments, `drop` removed (a flag and its value), then `changes`."""
    return ("run", *_changed(RUN_TINY, changes, drop))


RUN_SCRIPTED = ("--backend", "scripted", "--model", "mixed", "--data", "{W}/math.jsonl",
                "--output", "{out}", "--max-seqs", "2", "--max-new-tokens", "4", "--no-progress")
"""A run on the shipped scripted engine (no weights: a whole run in a blink)."""

BIG_RUN = ("--model", "hashed", "--data", "{W}/more/big.jsonl", "--max-new-tokens", "20",
           "--max-seqs", "3", "--mode", "eager_adapt")
"""40 prompts that branch: 41 tree lines (~12 kB), records of ~70 kB."""


def scripted(*changes: str, drop: tuple[str, ...] = ()) -> tuple[str, ...]:
    """`run` on the scripted engine, `drop` removed, then `changes`."""
    return ("run", *_changed(RUN_SCRIPTED, changes, drop))


def _changed(base: tuple[str, ...], changes: tuple[str, ...],
             drop: tuple[str, ...]) -> tuple[str, ...]:
    args = list(base)
    for flag in drop:
        i = args.index(flag)
        del args[i:i + 2]
    return (*args, *changes)


def data(path: str, *changes: str) -> tuple[str, ...]:
    """A scripted run on the data file W/more/<path>."""
    return scripted("--data", "{W}/more/" + path, *changes, drop=("--data",))


LM_EVAL = ("--model", "eager-hf", "--tasks", "aime25", "--include_path", "{repo}/tasks",
           "--limit", "1", "--gen_kwargs", "max_gen_toks=4", "--output_path", "{out}")
LM_EVAL_ENV = {"EAGER_EVAL_DATA_DIR": "{W}/aime", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
INSPECT = ("eval", "tasks/aime25.py", "--limit", "1", "--max-tokens", "4", "--log-dir", "{out}",
           "--display", "plain")


def lm_eval(what: str, model_args: str, words: tuple[str, ...], *, tasks: str = "aime25",
            env: dict[str, str] | None = None, in_suite: bool = False) -> Case:
    argv = list(LM_EVAL)
    argv[argv.index("aime25")] = tasks
    return Case("lm-eval", what, ("--model_args", model_args, *argv), 1, words, program="lm_eval",
                env={**LM_EVAL_ENV, **(env or {})}, in_suite=in_suite)


def inspect(what: str, args: tuple[str, ...], words: tuple[str, ...], *, task: str = "aime25",
            model: str = "eager/{chatmodel}", env: dict[str, str] | None = None,
            exit_code: int = 1, in_suite: bool = False) -> Case:
    """exit_code 1: Inspect could not build the model or the task; 0: the eval ran and its
    samples failed (Inspect logs the eval as an error and exits 0)."""
    argv = list(INSPECT)
    argv[1] = f"tasks/{task}.py"
    return Case("inspect", what, (*argv, "--model", model, *args), exit_code, words,
                program="inspect", env={**LM_EVAL_ENV, **(env or {})}, in_suite=in_suite)


CASES: list[Case] = [
    # --- eager-eval run: the model ---
    Case("run", "unknown model name", run("--model", "no-such-model", drop=("--model",)), 2,
         ("unknown model 'no-such-model'", "smollm2-135m")),
    Case("run", ".gguf path that does not exist", run("--model", "{W}/gone.gguf", drop=("--model",)),
         2, ("GGUF file", "does not exist")),
    Case("run", "empty .gguf file", run("--model", "{W}/empty.gguf", drop=("--model",)), 2,
         ("empty.gguf", "is empty", "download it again")),
    Case("run", "corrupt .gguf file (magic, then junk)",
         run("--model", "{W}/corrupt.gguf", drop=("--model",)), 2,
         ("cannot read GGUF file", "corrupt.gguf", "damaged or incomplete")),
    Case("run", "model file that is not .gguf", run("--model", "{W}/model.txt", drop=("--model",)),
         2, ("model.txt", "is not a .gguf file")),
    Case("run", "model directory without config.json",
         run("--model", "{W}/nomodel", drop=("--model",)), 2, ("nomodel", "has no config.json")),
    # --- eager-eval run: settings ---
    Case("run", "--theta -1", run("--theta", "-1"), 2, ("theta must be a number of nats > 0",)),
    Case("run", "--theta nan", run("--theta", "nan"), 2, ("theta must be", "nan")),
    Case("run", "--temperature inf", run("--temperature", "inf"), 2,
         ("temperature must be a finite number >= 0", "inf")),
    Case("run", "--temperature -0.1", run("--temperature", "-0.1"), 2,
         ("temperature must be a finite number >= 0",)),
    Case("run", "--top-p 0", run("--top-p", "0"), 2, ("top_p must be in (0, 1]",)),
    Case("run", "--entropy-k 1", run("--entropy-k", "1", drop=("--entropy-k",)), 2,
         ("entropy_k must be an integer >= 2",)),
    Case("run", "--entropy-k larger than the vocabulary (10 words)", run("--entropy-k", "50", drop=("--entropy-k",)),
         2, ("entropy_k must be <= the model's vocabulary size (10 tokens)", "50")),
    Case("run", "--top-k larger than the vocabulary", run("--top-k", "11"), 2,
         ("top_k must be 0 (off) or <= the model's vocabulary size (10 tokens)", "11")),
    Case("run", "--max-seqs 0", run("--max-seqs", "0", drop=("--max-seqs",)), 2,
         ("max_seqs must be an integer >= 1",)),
    Case("run", "--percentile 150", run("--percentile", "150"), 2, ("percentile must be in (0, 100]",)),
    Case("run", "--mode beam", run("--mode", "beam"), 2, ("mode must be one of: full_parallel",)),
    Case("run", "--max-new-tokens 0", run("--max-new-tokens", "0", drop=("--max-new-tokens",)), 2,
         ("max_new_tokens must be an integer >= 1",)),
    Case("run", "--max-rows 0", run("--max-rows", "0"), 2, ("--max-rows", "must be an integer >= 1, got 0")),
    Case("run", "--max-rows -3", run("--max-rows", "-3"), 2, ("--max-rows", "must be an integer >= 1, got -3")),
    Case("run", "--limit 0", run("--limit", "0"), 2, ("--limit", "must be an integer >= 1")),
    Case("run", "--threads 0", run("--threads", "0"), 2, ("--threads", "must be an integer >= 1")),
    Case("run", "--seed -1", run("--seed", "-1"), 2, ("seed must be an integer >= 0",)),
    Case("run", "unknown flag --thetta", run("--thetta", "2"), 2, ("unrecognized arguments: --thetta",)),
    # --- eager-eval run: engine ---
    Case("run", "--device cuda on a machine without CUDA", run("--device", "cuda"), 2,
         ("CUDA is not available", "--device cpu")),
    Case("run", "--device tpu", run("--device", "tpu"), 2, ("device 'tpu'",)),
    Case("run", "--dtype float8", run("--dtype", "float8"), 2, ("dtype must be one of",)),
    Case("run", "--engine-arg without =", run("--engine-arg", "enforce_eager"), 2,
         ("--engine-arg must be KEY=VALUE",)),
    Case("run", "--engine-arg with the hf backend", run("--engine-arg", "enforce_eager=true"), 2,
         ("used with --backend vllm",)),
    Case("run", "--backend sglang", run("--backend", "sglang"), 2, ("invalid choice: 'sglang'",)),
    # --- eager-eval run: replicas (docs/SCALE.md) ---
    Case("run", "--replicas 0", run("--replicas", "0"), 2, ("--replicas", "must be an integer >= 1, got 0")),
    Case("run", "--replicas 2 --device cuda on a machine without GPUs",
         run("--replicas", "2", "--device", "cuda"), 2,
         ("more replicas than GPUs", "replicas=2 needs 2 GPUs")),
    Case("run", "--replicas 2 --device cuda:1 (one GPU for two replicas)",
         run("--replicas", "2", "--device", "cuda:1"), 2, ("device=cuda:1 names one GPU",)),
    Case("run", "--replicas 2 with a RAY_ADDRESS that does not answer", run("--replicas", "2"), 2,
         ("RAY_ADDRESS=127.0.0.1:9 does not answer", "unset RAY_ADDRESS"),
         env={"RAY_ADDRESS": "127.0.0.1:9"}),
    Case("run", "one of several accelerate launch processes (WORLD_SIZE=2)", run(), 2,
         ("launched as process 1 of 2", "replicas=2"), env={"WORLD_SIZE": "2", "RANK": "1"}),
    # --- eager-eval run: the output directory ---
    Case("run", "--output names a file", run("--output", "{W}/a_file", drop=("--output",)), 2,
         ("a_file is a file",)),
    Case("run", "--output under a file", run("--output", "{W}/a_file/out", drop=("--output",)), 2,
         ("lies under", "a_file, which is a file")),
    Case("run", "--output where nothing may be created (/sys)",
         run("--output", "/sys/eager-eval-out", drop=("--output",)), 2,
         ("cannot create output directory /sys/eager-eval-out",)),
    Case("run", "--output a directory another run is using", run(), 2,
         ("output directory", "is in use by another eager-eval run (pid {pid})"), setup=held_lock),
    Case("run", "--resume into a directory another run is using", run("--resume"), 2,
         ("is in use by another eager-eval run (pid {pid})",), setup=held_lock),
    Case("run", "--resume with another --theta", run("--mode", "eager_init", "--theta", "1.5", "--resume"),
         2, ("cannot resume from", "settings.theta: stored 2.0, now 1.5"), setup=finished_run),
    Case("run", "a prompt longer than the model's context (128)",
         run("--data", "{W}/long.jsonl", drop=("--data",)), 2,
         ("prompt 'long-1' is", "tokens", "context holds 128")),
    Case("run", "a second method into the directory, over other prompts (--limit 3 vs 2)",
         run("--limit", "3"), 0, ("savings vs full_parallel left blank", "other prompts"),
         setup=full_parallel_on_2_prompts),
    # --- eager-eval run: data files ---
    Case("data", "--data that does not exist", run("--data", "{W}/gone.jsonl", drop=("--data",)), 2,
         ("gone.jsonl does not exist",)),
    Case("data", "--data with another suffix (.txt)", run("--data", "{W}/notes.txt", drop=("--data",)),
         2, ("must be .jsonl or .csv", ".txt")),
    Case("data", "empty .jsonl", run("--data", "{W}/empty.jsonl", drop=("--data",)), 2,
         ("empty.jsonl holds no rows",)),
    Case("data", ".jsonl with a broken line", run("--data", "{W}/broken.jsonl", drop=("--data",)), 2,
         ("broken.jsonl:2 is not JSON",)),
    Case("data", ".jsonl without the problem field",
         run("--data", "{W}/question.jsonl", drop=("--data",)), 2,
         ("lacks field(s) ['problem']", "--problem-field")),
    Case("data", "--problem-field naming no column", run("--problem-field", "nope"), 2,
         ("lacks field(s) ['nope']",)),
    Case("data", ".jsonl that is not UTF-8", run("--data", "{W}/latin1.jsonl", drop=("--data",)), 2,
         ("is not UTF-8",)),
    Case("data", "choice .csv without columns C and D",
         run("--data", "{W}/cols.csv", "--answer-type", "choice", drop=("--data",)), 2,
         ("lacks field(s) ['C', 'D']",)),
    Case("data", "choice .csv whose answer is no letter A-D",
         run("--data", "{W}/letter.csv", "--answer-type", "choice", drop=("--data",)), 2,
         ("has answer 'E'", "one of the letters A, B, C, D")),
    # --- eager-eval demo ---
    Case("demo", "--modes with an unknown method", ("demo", "--modes", "full_parallel,greedy"), 2,
         ("modes must be a comma-separated list",)),
    Case("demo", "--resume without --output", ("demo", "--resume"), 2,
         ("resume must be used with --output DIR",)),
    Case("demo", "--limit 0", ("demo", "--limit", "0"), 2, ("--limit", "must be an integer >= 1")),
    # --- eager-eval report ---
    Case("report", "a directory holding no results", ("report", "{W}/emptydir", "--output", "{out}"),
         2, ("no readable runs",)),
    Case("report", "a path that does not exist", ("report", "{W}/gone", "--output", "{out}"), 2,
         ("no readable runs",)),
    Case("report", "only a truncated results.json", ("report", "{W}/results-corrupt", "--output", "{out}"),
         2, ("no readable runs",)),
    Case("report", "--output names an existing file", ("report", "{W}/results-gaps", "--output",
                                                       "{W}/a_file"), 2, ("a_file is a file",)),
    Case("report", "results with a non-numeric metric (pass_at_k: 'n/a')",
         ("report", "{W}/results-gaps", "--output", "{out}", "--no-plots"), 0,
         ("warning:", "pass_at_k is 'n/a', not a number; shown as —")),
    Case("report", "results missing metrics",
         ("report", "{W}/results-gaps", "--output", "{out}", "--no-plots"), 0,
         ("warning:", "no cons_at_k, pass_rate, n_prompts recorded; shown as —")),
    # --- eager-eval sweep ---
    Case("sweep", "a config file that does not exist", ("sweep", "{W}/gone.yaml"), 2,
         ("cannot read", "gone.yaml")),
    Case("sweep", "a config that is not YAML", ("sweep", "{W}/sweep-yaml.yaml"), 2, ("invalid YAML",)),
    Case("sweep", "a misspelt key (thetta)", ("sweep", "{W}/sweep-key.yaml"), 2,
         ("unknown sweep key 'thetta'", "did you mean 'theta'")),
    Case("sweep", "theta: -1", ("sweep", "{W}/sweep-theta.yaml"), 2, ("theta must be",)),
    Case("sweep", "--limit 0", ("sweep", "{W}/sweep-ok.yaml", "--limit", "0"), 2,
         ("--limit must be an integer >= 1",)),
    Case("sweep", "--output names a file", ("sweep", "{W}/sweep-ok.yaml", "--output", "{W}/a_file"), 2,
         ("a_file is a file",)),
    Case("sweep", "a cell that fails to start (run_args: device cuda)",
         ("sweep", "{W}/sweep-cuda.yaml", "--output", "{out}"), 1,
         ("eager_init", "exited with code 2")),
    # --- lm-eval model_args ---
    lm_eval("theta=-1", "pretrained={chatmodel},theta=-1", ("theta must be a number of nats > 0",),
            in_suite=True),
    lm_eval("misspelt thetta=2", "pretrained={chatmodel},thetta=2",
            ("unknown eager-hf model arg 'thetta'", "did you mean 'theta'")),
    lm_eval("pretrained=no-such-model", "pretrained=no-such-model", ("unknown model 'no-such-model'",)),
    lm_eval("temperature=inf", "pretrained={chatmodel},temperature=inf",
            ("temperature must be a finite number",)),
    lm_eval("max_rows=0", "pretrained={chatmodel},max_rows=0", ("max_rows must be an integer >= 1",)),
    lm_eval("entropy_k above the vocabulary", "pretrained={chatmodel},entropy_k=100000",
            ("entropy_k must be <= the model's vocabulary size",)),
    lm_eval("chat=maybe", "pretrained={chatmodel},chat=maybe", ("chat must be auto, true or false",)),
    lm_eval("gpqa_diamond without its CSV (offline data dir)", "pretrained={chatmodel}",
            ("has no gpqa_diamond.csv",), tasks="gpqa_diamond", env={"EAGER_EVAL_DATA_DIR": "{W}/no-gpqa"},
            in_suite=True),
    lm_eval("trees= a file, not a directory", "pretrained={chatmodel},trees={W}/model.txt",
            ("trees", "is a file")),
    # --- Inspect -M ---
    inspect("-M theta=-1", ("-M", "theta=-1"), ("theta must be a number of nats > 0",), in_suite=True),
    inspect("misspelt -M max_seq=4", ("-M", "max_seq=4"),
            ("unknown -M option of the eager provider 'max_seq'", "did you mean 'max_seqs'")),
    inspect("-M batch_window=0", ("-M", "batch_window=0"), ("batch_window must be a finite number",)),
    inspect("-M trees= a file, not a directory", ("-M", "trees={W}/model.txt"), ("trees", "is a file")),
    inspect("-M device=cuda without CUDA", ("-M", "device=cuda"), ("CUDA is not available",)),
    inspect("-M temperature=inf", ("-M", "temperature=inf"), ("temperature must be a finite number",)),
    inspect("-M max_rows=0", ("-M", "max_rows=0"), ("max_rows must be an integer >= 1",)),
    inspect("-M entropy_k above the vocabulary (checked when the weights load, at the first call)",
            ("-M", "entropy_k=100000"), ("entropy_k must be <= the model's vocabulary size",), exit_code=0,
            in_suite=True),
    inspect("unknown model eager/no-such-model", (), ("unknown model 'no-such-model'",),
            model="eager/no-such-model"),
    inspect("gpqa.py without its CSV (offline data dir)", (), ("has no gpqa_diamond.csv",),
            task="gpqa", env={"EAGER_EVAL_DATA_DIR": "{W}/no-gpqa"}, in_suite=True),

    # ===== issue 20: inputs and faults the first 82 rows did not hold =====
    # --- odd data, refused by name and line (or warned about) ---
    Case("data", "two rows with one id", data("dup-ids.jsonl"), 2,
         ("dup-ids.jsonl:2: row 2 has the id 'p1' of row 1", "every row needs its own id")),
    Case("data", "an answer that is a list", data("answer-list.jsonl"), 2,
         ("answer-list.jsonl:1", "answer field 'answer' is a list ([1, 2])", "write one answer as text")),
    Case("data", "an answer that is a boolean", data("answer-bool.jsonl"), 2,
         ("answer-bool.jsonl:1", "is a boolean (True)")),
    Case("data", "an answer that is NaN", data("answer-nan.jsonl"), 2,
         ("answer-nan.jsonl:1 holds NaN, which is not JSON", "write the value as text")),
    Case("data", "a problem that is an object", data("problem-object.jsonl"), 2,
         ("problem-object.jsonl:1", "field 'problem' is an object", "not text")),
    Case("data", "a key twice in one JSON line", data("dup-key.jsonl"), 2,
         ("dup-key.jsonl:1 has the key 'answer' twice", "keep one")),
    Case("data", "a JSON line that is a list, not an object", data("array-line.jsonl"), 2,
         ("array-line.jsonl:1 is not a JSON object (it is a list)",)),
    Case("data", "an id that is a list", data("id-list.jsonl"), 2,
         ("'id' is [1]", "an id must be non-empty text or an integer")),
    Case("data", "a CSV row with an extra cell", data("extra-cells.csv"), 2,
         ("extra-cells.csv:2: row 1 has 3 cells but the header has 2", "quote a cell")),
    Case("data", "a CSV row with a cell missing", data("short-row.csv"), 2,
         ("short-row.csv:2: row 1 has 1 cell but the header has 3",)),
    Case("data", "a CSV header with an empty field name", data("empty-name.csv"), 2,
         ("empty-name.csv:1: column 2 of the header has no name",)),
    Case("data", "a CSV header naming a column twice", data("dup-name.csv"), 2,
         ("dup-name.csv:1: the header names 'answer' twice (columns 2 and 3)",)),
    Case("data", "--problem-field ''", scripted("--problem-field", ""), 2,
         ("--problem-field is empty",)),
    Case("data", "--data ''", scripted("--data", "", drop=("--data",)), 2, ("--data is empty",)),
    Case("data", "the same problem under two ids (warned: it counts twice)", data("same-problem.jsonl"),
         0, ("warning:", "row 2 repeats the problem of row 1", "counts twice")),
    Case("data", "theta=auto on one prompt of 4 tokens (a threshold from 4 entropies: warned)",
         scripted("--data", "{W}/more/one.jsonl", "--model", "hashed", "--theta", "auto",
                  drop=("--data", "--model")), 0,
         ("warning: theta=auto:", "of only 4 entropies", "give theta a number")),
    # --- operating-system errors: one line naming the path and the OS's reason ---
    Case("data", "a data file that cannot be read (permission)",
         data("faults/eacces.jsonl"), 2,
         ("cannot read data file", "eacces.jsonl: Permission denied", "check its permissions"),
         setup=_fault(_unreadable, "eacces.jsonl")),
    Case("data", "a data file whose read fails with an I/O error",
         data("faults/eio.jsonl"), 2, ("cannot read data file", "eio.jsonl: Input/output error"),
         setup=_fault(_io_error, "eio.jsonl")),
    Case("data", "a data file that is a symlink loop", data("faults/loop.jsonl"), 2,
         ("loop.jsonl: Too many levels of symbolic links", "points back at itself"),
         setup=_fault(_loop, "loop.jsonl")),
    Case("data", "a data path that is a directory", data("a-directory.jsonl"), 2,
         ("a-directory.jsonl is a directory, not a file",)),
    Case("run", "a model directory without tokenizer files",
         run("--model", "{W}/more/notok", drop=("--model",)), 2,
         ("cannot load the tokenizer of model", "notok", "tokenizer.save_pretrained")),
    Case("run", "a model directory with a broken tokenizer.json",
         run("--model", "{W}/more/badtok", drop=("--model",)), 2,
         ("cannot load the tokenizer of model", "badtok", "JSONDecodeError")),
    Case("run", "--output on a read-only file system", scripted(), 2,
         ("--output {out} is not writable (Read-only file system)",), setup=read_only_output),
    Case("run", "the disk fills up while trees are written (tmpfs of 8 kB)",
         ("run", "--backend", "scripted", "--output", "{out}", "--no-progress", *BIG_RUN), 2,
         ("cannot save a finished tree to {out}/trees/eager_adapt.jsonl: No space left on device",
          "are kept there", "--resume"), setup=small_disk(8192), keeps=True),
    Case("run", "the disk fills up when the results are written (tmpfs of 48 kB)",
         ("run", "--backend", "scripted", "--output", "{out}", "--no-progress", *BIG_RUN), 2,
         ("cannot write {out}/eager_adapt.jsonl: No space left on device", "every tree is kept",
          "--resume"), setup=small_disk(49152), keeps=True),
    Case("run", "the file system turns read-only before the results are written (bind mount)",
         ("run", "--backend", "scripted", "--output", "{out}", "--no-progress", *BIG_RUN), 2,
         ("cannot write {out}/eager_adapt.jsonl", "Read-only file system", "every tree is kept"),
         setup=read_only_before_results, keeps=True, hook=True),
    Case("run", "the file system turns read-only at the third tree (simulated EROFS)",
         ("run", "--backend", "scripted", "--output", "{out}", "--no-progress", *BIG_RUN), 2,
         ("cannot save a finished tree", "Read-only file system", "the trees saved before it (2) are kept"),
         setup=read_only_at_the_third_tree, keeps=True, hook=True),
    # --- outputs of another shape, checked before generating; nothing lost ---
    Case("run", "a results.json in --output that is a JSON list", scripted(), 2,
         ("{out}/results.json is not an eager-eval run's results (a JSON list)", "move"),
         setup=results_file("[1, 2]\n")),
    Case("run", "a results.json in --output that is not JSON", scripted(), 2,
         ("{out}/results.json is not JSON", "another program's file"),
         setup=results_file("runs: 3\n")),
    Case("run", "a kept run in results.json without metrics (another method)",
         run("--mode", "eager_init"), 2,
         ("run 1 (full_parallel) has no metrics", "cannot be kept beside this run's"),
         setup=kept_run_without_metrics),
    Case("run", "a second task into an output folder holding another task's run",
         run("--mode", "eager_init"), 2,
         ("holds the runs of model", "on task 'one'", "would drop them", "another --output"),
         setup=other_task_run),
    Case("run", "--resume with a tree file whose read fails with an I/O error",
         scripted("--mode", "eager_init", "--resume"), 2,
         ("cannot read the tree file {out}/trees/eager_init.jsonl: Input/output error",),
         setup=fault_in_output("trees/eager_init.jsonl", _io_error)),
    Case("run", "a results.json in --output that cannot be read (permission)", scripted(), 2,
         ("cannot read {out}/results.json: Permission denied", "move"),
         setup=fault_in_output("results.json", _unreadable)),
    Case("run", "--output ''", scripted("--output", "", drop=("--output",)), 2,
         ("--output is empty", "use . for the working directory")),
    # --- eager-eval report on hand-edited results: warned, never a traceback ---
    Case("report", "results with settings as a list",
         ("report", "{W}/more/edited/settings-list", "--output", "{out}", "--no-plots"), 0,
         ("warning:", "settings is list [2.0, 4], not a mapping")),
    Case("report", "results with garbage rounds",
         ("report", "{W}/more/edited/rounds-garbage", "--output", "{out}", "--no-plots"), 0,
         ("warning:", "rounds are unreadable", "left out")),
    Case("report", "results with theta 'abc'",
         ("report", "{W}/more/edited/theta-text", "--output", "{out}", "--no-plots"), 0,
         ("warning:", "settings.theta is 'abc': theta must be a number", "shown as —")),
    Case("report", "results with pass_at_k 7.5",
         ("report", "{W}/more/edited/rate-above-1", "--output", "{out}", "--no-plots"), 0,
         ("warning:", "pass_at_k is 7.5: a share of prompts must be in [0, 1]")),
    Case("report", "results with n_prompts -3",
         ("report", "{W}/more/edited/negative-count", "--output", "{out}", "--no-plots"), 0,
         ("warning:", "n_prompts is -3: a count must be a whole number >= 0")),
    Case("report", "results whose samples path leads out of the run directory",
         ("report", "{W}/more/edited/samples-outside", "--output", "{out}", "--no-plots"), 0,
         ("warning:", "samples file ../../../etc/passwd lies outside the run directory", "not read")),
    Case("report", "results with a method that is none (beam)",
         ("report", "{W}/more/edited/unknown-method", "{W}/results-gaps", "--output", "{out}",
          "--no-plots"), 0, ("warning:", "method 'beam' is not one of", "ignored")),
    Case("report", "results with savings 'big'",
         ("report", "{W}/more/edited/savings-text", "--output", "{out}", "--no-plots"), 0,
         ("warning:", "savings_vs_full_parallel is 'big', not a number")),
    Case("report", "results whose model is a list (the file is skipped)",
         ("report", "{W}/more/edited/model-list", "--output", "{out}", "--no-plots"), 2,
         ("has ['m'] as \"model\"",)),
    Case("report", "--output ''", ("report", "{W}/results-gaps", "--output", ""), 2,
         ("--output is empty",)),
    # --- sweep configs: wrong types and sizes, refused before a cell runs (dry runs too) ---
    Case("sweep", "a model that is a number", ("sweep", "{W}/more/sweep-model-number.yaml", "--dry-run"),
         2, ("models must be a model name or path as text", "got 5")),
    Case("sweep", "a model that is a mapping", ("sweep", "{W}/more/sweep-model-mapping.yaml",
                                                "--dry-run"), 2, ("models must be", "got {{'name': 'm'}}")),
    Case("sweep", "a model that is null", ("sweep", "{W}/more/sweep-model-null.yaml", "--dry-run"), 2,
         ("models must be", "got None")),
    Case("sweep", "a task file that does not exist (--dry-run)",
         ("sweep", "{W}/more/sweep-task-missing.yaml", "--dry-run"), 2,
         ("task gone: data file", "gone.jsonl does not exist")),
    Case("sweep", "a task file with two rows of one id (--dry-run)",
         ("sweep", "{W}/more/sweep-task-dup-ids.yaml", "--dry-run"), 2,
         ("task dup-ids:", "every row needs its own id")),
    Case("sweep", "output: 5", ("sweep", "{W}/more/sweep-output-number.yaml", "--dry-run"), 2,
         ("output must be a directory path as text", "got 5")),
    Case("sweep", "report: maybe", ("sweep", "{W}/more/sweep-report-text.yaml", "--dry-run"), 2,
         ("report must be true or false, got 'maybe'",)),
    Case("sweep", "run_args: {resume: false}", ("sweep", "{W}/more/sweep-resume-false.yaml", "--dry-run"),
         2, ("run_args: resume is the sweep's own", "remove it")),
    Case("sweep", "run_args with an unknown option", ("sweep", "{W}/more/sweep-run-arg-unknown.yaml",
                                                      "--dry-run"), 2,
         ("do not make a valid `eager-eval run` command line", "unrecognized arguments: --thetta")),
    Case("sweep", "run_args holding an EAGer setting", ("sweep", "{W}/more/sweep-run-arg-setting.yaml",
                                                        "--dry-run"), 2,
         ("run_args: temperature is an EAGer setting",)),
    Case("sweep", "a grid of 10 million cells", ("sweep", "{W}/more/sweep-million.yaml", "--dry-run"), 2,
         ("10,000,000 cells", "more than --max-cells 1,000", "--max-cells 10000000")),
    # --- harness paths and settings ---
    Case("run", "--think-end ''", scripted("--think-end", ""), 2,
         ("think_end is empty", "think_end=none")),
    Case("run", "--theta ''", scripted("--theta", ""), 2, ("theta is empty",)),
    Case("run", "--seed 2**64 + 5 (would wrap to seed 5)", scripted("--seed", str(2**64 + 5)), 2,
         ("seed must be an integer in [0, 2**63 - 1",)),
    Case("run", "--temperature 1e-310 (denormal)", scripted("--temperature", "1e-310"), 2,
         ("temperature must be 0 (greedy) or at least 0.01, got 1e-310", "use 0 for greedy")),
    Case("run", "--temperature 0.001", scripted("--temperature", "0.001"), 2,
         ("temperature must be 0 (greedy) or at least 0.01, got 0.001",)),
    inspect("--max-tokens 0 (Inspect's GenerateConfig)", ("--max-tokens", "0"),
            ("max_new_tokens must be an integer >= 1", "Inspect's max_tokens"), exit_code=0,
            in_suite=True),
    inspect("--temperature -1 (Inspect's GenerateConfig)", ("--temperature", "-1"),
            ("temperature must be a finite number >= 0", "Inspect's temperature"), exit_code=0),
    inspect("-M seed=2**64+5", ("-M", f"seed={2**64 + 5}"), ("seed must be an integer in [0, 2**63 - 1",)),
    inspect("-M temperature=1e-310", ("-M", "temperature=1e-310"),
            ("temperature must be 0 (greedy) or at least 0.01",)),
    inspect("a data file with two rows of one id (EAGER_EVAL_DATA_DIR)", (),
            ("aime25.jsonl:2: row 2 has the id 'a1' of row 1",),
            env={"EAGER_EVAL_DATA_DIR": "{W}/more/aime-dup"}),
    lm_eval("think_end= (empty)", "pretrained={chatmodel},think_end=", ("think_end is empty",)),
    lm_eval("seed=2**64+5", f"pretrained={{chatmodel}},seed={2**64 + 5}",
            ("seed must be an integer in [0, 2**63 - 1",)),
    lm_eval("temperature=1e-310", "pretrained={chatmodel},temperature=1e-310",
            ("temperature must be 0 (greedy) or at least 0.01",)),
    lm_eval("trees= (empty)", "pretrained={chatmodel},trees=", ("trees is empty",)),
    lm_eval("a data file with two rows of one id (EAGER_EVAL_DATA_DIR)", "pretrained={chatmodel}",
            ("aime25.jsonl:2: row 2 has the id 'a1' of row 1",),
            env={"EAGER_EVAL_DATA_DIR": "{W}/more/aime-dup"}, in_suite=True),
    # --- eager-eval run: confidence and DeepConf (docs/CONFIDENCE.md); last, so the numbers
    # of the cases above (docs/RELIABILITY.md) stay ---
    Case("run", "--mode deepconf with a warm-up that leaves no budget", run("--mode", "deepconf"), 2,
         ("deepconf_warmup=16 leaves no budget", "max_seqs=2")),
    Case("run", "--deepconf-percentile 100", run("--deepconf-percentile", "100"), 2,
         ("deepconf_percentile must be in (0, 100)",)),
    Case("run", "--confidence-window 0", run("--confidence-window", "0"), 2,
         ("confidence_window must be an integer >= 1",)),
    Case("run", "--confidence-k larger than the vocabulary (10 words)", run("--confidence-k", "11"),
         2, ("confidence_k must be 0 (off) or <= the model's vocabulary size (10 tokens)", "11")),
    Case("run", "--confidence-stop true without reallocation rounds",
         run("--mode", "eager_init", "--confidence-stop", "true"), 2,
         ("confidence_stop applies to the reallocation rounds",)),
    Case("run", "--max-rows below --max-seqs (one tree cannot fit)",
         run("--max-rows", "2", "--max-seqs", "4", drop=("--max-seqs",)), 2,
         ("max_rows=2 cannot hold one tree", "max_seqs=4", "set max_rows to 4 or more")),
]
for _number, _case in enumerate(CASES, 1):
    object.__setattr__(_case, "id", f"{_number:02d}-{_case.surface}-" +
                       re.sub(r"[^a-z0-9]+", "-", _case.what.lower()).strip("-")[:40])


# --- running a case -------------------------------------------------------------------------


@dataclass
class Observed:
    exit_code: int
    stderr: str
    stdout: str
    seconds: float
    wrote: list[str]
    """Paths created or changed under the case's output directory (minus the set-up's)."""
    kept: dict[str, int | None] = field(default_factory=dict)
    """Each JSON or JSONL file written: its line count if every line is whole JSON, else None
    (seen before a set-up's mount goes away)."""

    def line(self, words: tuple[str, ...]) -> str | None:
        """The first line of stderr (then stdout) holding every key word; else the first
        error line."""
        for text in (self.stderr, self.stdout):
            for line in text.splitlines():
                if all(word in line for word in words):
                    return line.strip()
        return self.error_line

    @property
    def error_line(self) -> str | None:
        for line in self.stderr.splitlines():
            if ERROR in line:
                return line.strip()
        return None

    @property
    def traceback_after(self) -> bool:
        return "Traceback" in self.stderr


def snapshot(directory: Path) -> dict[str, float]:
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns
            for p in sorted(directory.rglob("*"))}


def run_case(case: Case, ws: Workspace, out: Path, *, in_process: bool) -> Observed:
    """Run one case (set-up included); `in_process` runs eager-eval through cli.main (a case
    with a hook always). A set-up that cannot make its fault here raises faults.Unavailable."""
    in_process = in_process or case.hook
    with ExitStack() as stack:
        if case.setup is not None:
            held = case.setup(ws, out)
            if hasattr(held, "__enter__"):
                stack.enter_context(held)
        before = snapshot(out)
        argv = [ws.fill(a, out) for a in case.argv]
        env = {k: ws.fill(v, out) for k, v in case.env.items()}
        started = time.perf_counter()
        if in_process and case.in_process:
            code, stdout, stderr = _in_process(argv, env)
        else:
            code, stdout, stderr = _subprocess(case.program, argv, env)
        seconds = time.perf_counter() - started
        after = snapshot(out)  # while a held lock still holds: the holder's files as they are
        wrote = sorted(k for k, v in after.items() if before.get(k) != v)
        kept = {name: _whole_lines(out / name) for name in wrote
                if name.endswith((".json", ".jsonl"))}
    return Observed(code, stderr, stdout, seconds, wrote, kept)


def _whole_lines(path: Path) -> int | None:
    """Lines of a JSON/JSONL file if each is whole JSON (a .json file: one document)."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            json.loads(text)
            return 1
        lines = text.splitlines()
        for line in lines:
            json.loads(line)
        return len(lines) if text.endswith("\n") or not text else None
    except (OSError, ValueError):
        return None


def _in_process(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    import contextlib
    import io

    from eager_eval.frontends.cli import main as cli

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return code, out.getvalue(), err.getvalue()


def _subprocess(program: str, argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """(exit code, "", stdout and stderr as one stream): Inspect logs to stdout and prints its
    traceback to stderr, so only one stream tells which came first."""
    done = subprocess.run([str(BIN / program), *argv], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "COLUMNS": "250", **env}, timeout=600)
    return done.returncode, "", done.stdout


# --- the table of docs/RELIABILITY.md ----------------------------------------------------------


def verdict(case: Case, seen: Observed, ws: Workspace, out: Path) -> tuple[bool, str]:
    """(as expected?, what was seen, in words)."""
    line = seen.line(case_words(case, ws, out))
    holds = line is not None and all(w in line for w in case_words(case, ws, out))
    ok = seen.exit_code == case.exit_code and holds
    parts = [f"exit {seen.exit_code}"]
    if case.keeps:
        ok = ok and bool(seen.kept) and None not in seen.kept.values()
    if case.program == "eager-eval":
        parts.append("no traceback" if not seen.traceback_after else "TRACEBACK")
        if case.keeps:
            parts.append(_kept(seen.kept))
        elif case.exit_code != 0:
            parts.append(_written(seen.wrote))
    else:
        first = seen.stderr.find(ERROR)
        trace = seen.stderr.find("Traceback")
        parts.append("clear line first, then the harness's traceback" if 0 <= first < trace or
                     (first >= 0 > trace) else "NO CLEAR LINE FIRST")
    parts.append("after the model loaded" if "Loading weights" in seen.stderr
                 else "no model loaded")
    return ok, "; ".join(parts)


def _kept(kept: dict[str, int | None]) -> str:
    if not kept:
        return "NOTHING KEPT"
    shown = [f"{name} ({'BROKEN' if n is None else f'{n} whole lines'})"
             for name, n in kept.items() if name.endswith(".jsonl")]
    return "kept " + ", ".join(shown or list(kept))


def _written(paths: list[str]) -> str:
    if not paths:
        return "nothing written"
    runs = [p for p in paths if p.endswith((".jsonl", "results.json"))]
    if not runs:
        return f"no trees or results written ({', '.join(Path(p).name for p in paths[:2])} …)"
    return f"wrote {', '.join(runs[:3])}"


def case_words(case: Case, ws: Workspace, out: Path) -> tuple[str, ...]:
    return tuple(ws.fill(w, out) for w in case.words)


def _shown(line: str | None, ws: Workspace, out: Path) -> str:
    """The line as the table shows it: no log prefix or padding, short paths (W: the
    workspace, OUT: the case's output directory), at most 150 characters."""
    if line is None:
        return "(none)"
    if ERROR in line:
        line = line[line.index(ERROR):]
    line = line.replace(str(out), "OUT").replace(str(ws.root), "W").replace(str(REPO), ".")
    line = re.sub(r"\s{2,}", " ", line).strip().replace("|", "\\|")
    return (line[:150] + " …") if len(line) > 150 else line


def main() -> int:
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    root = Path(tempfile.mkdtemp(prefix="eager-bad-inputs-"))
    ws = Workspace(root / "W", chat_model=True)
    rows, failures = [], 0
    from faults import Unavailable

    for case in CASES:
        out = root / "out" / case.id
        try:
            seen = run_case(case, ws, out, in_process=False)
        except Unavailable as why:
            rows.append(f"| {len(rows) + 1} | {case.surface} | {case.what} | "
                        f"– not made on this machine: {why} | | |")
            print(f"{case.id}: skipped ({why})", file=sys.stderr, flush=True)
            continue
        ok, said = verdict(case, seen, ws, out)
        if case.hook:
            said += "; in-process (a hook times the fault)"
        failures += not ok
        line = seen.line(case_words(case, ws, out))
        rows.append(f"| {len(rows) + 1} | {case.surface} | {case.what} | "
                    f"{'✓' if ok else '✗'} {said} | `{_shown(line, ws, out)}` | {seen.seconds:.1f} |")
        print(f"{case.id}: {'ok' if ok else 'UNEXPECTED'} ({said})", file=sys.stderr, flush=True)
    print("| # | surface | bad input | verdict | the line the user reads | s |")
    print("|---|---|---|---|---|---:|")
    print("\n".join(rows))
    shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
