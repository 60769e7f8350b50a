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


RUN_TINY = ("--model", "{tiny}", "--data", "{W}/math.jsonl", "--output", "{out}", "--max-seqs",
            "2", "--max-new-tokens", "4", "--entropy-k", "5", "--no-progress")
"""A run that works: each case changes one thing of it."""


def run(*changes: str, drop: tuple[str, ...] = ()) -> tuple[str, ...]:
    """`run` with the working arguments, `drop` removed (a flag and its value), then `changes`."""
    args = list(RUN_TINY)
    for flag in drop:
        i = args.index(flag)
        del args[i:i + 2]
    return ("run", *args, *changes)


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
    """Run one case (set-up included); `in_process` runs eager-eval through cli.main."""
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
    return Observed(code, stderr, stdout, seconds, wrote)


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
    if case.program == "eager-eval":
        parts.append("no traceback" if not seen.traceback_after else "TRACEBACK")
        if case.exit_code != 0:
            parts.append(_written(seen.wrote))
    else:
        first = seen.stderr.find(ERROR)
        trace = seen.stderr.find("Traceback")
        parts.append("clear line first, then the harness's traceback" if 0 <= first < trace or
                     (first >= 0 > trace) else "NO CLEAR LINE FIRST")
    parts.append("after the model loaded" if "Loading weights" in seen.stderr
                 else "no model loaded")
    return ok, "; ".join(parts)


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
    for case in CASES:
        out = root / "out" / case.id
        seen = run_case(case, ws, out, in_process=False)
        ok, said = verdict(case, seen, ws, out)
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
