"""eager-eval command line.

    eager-eval demo                      # offline: SmolLM2-135M on generated math problems,
                                         # Full Parallel vs EAGer-init / -adapt / full EAGer
    eager-eval run --model NAME --data FILE.jsonl --mode eager_adapt --output DIR [--resume]

Each subcommand is one `add_arguments(parser)` function plus one `handler(args) -> int`,
registered with `@subcommand(...)` in `SUBCOMMANDS`; `main` builds the parser from that
registry, so a new subcommand is one more registration and nothing else changes.

Every EagerConfig field is a flag of the same name (`--max-seqs`, `--theta inf`,
`--percentile none`), parsed by `EagerConfig.from_mapping` as in every other front end.

Bad input (unknown model, missing data, bad setting, a resume from other settings, a device that
is not there, an output directory another run is using) ends with one line on stderr and exit
code 2, never a traceback, and before the model loads wherever the check does not need the model
(docs/RELIABILITY.md lists the cases); Ctrl-C ends with exit code 130 and the command that
resumes. Heavy imports (torch, transformers, math-verify) wait until a subcommand needs them, so
`--help` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import datetime as _dt
import hashlib
import inspect
import json
import shlex
import sys
import textwrap
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from eager_eval.calibration import is_auto, split_auto_theta
from eager_eval.config import ConfigError, EagerConfig, Mode
from eager_eval.datasets import DataFileError, read_jsonl
from eager_eval.errors import USER_ERRORS
from eager_eval.files import OutputLock, check_output_dir
from eager_eval.settings import RENAMED

if TYPE_CHECKING:
    from eager_eval.calibration import Calibration
    from eager_eval.engines import Engine
    from eager_eval.outputs import MethodRun, Problem
    from eager_eval.progress import RunProgress
    from eager_eval.runner import PromptInput
    from eager_eval.store import JsonlTreeStore

PROG = "eager-eval"

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


# --- registry ----------------------------------------------------------------------------------


class UsageError(Exception):
    """argparse's complaint, raised instead of exiting so `main` can return 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  (argparse calls sys.exit)
        raise UsageError(f"{PROG}: error: {message}")  # one form for every bad input


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {}


def subcommand(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register `handler(args) -> exit code` as `eager-eval NAME`."""

    def register(handler: Callable[[argparse.Namespace], int]):
        if name in SUBCOMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice "
                             f"({SUBCOMMANDS[name].handler.__qualname__} and {handler.__qualname__})")
        SUBCOMMANDS[name] = Subcommand(name, help, add_arguments, handler)
        return handler

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="EAGer entropy-aware branching decoding: run and "
                     "compare methods (arXiv 2510.11170).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for cmd in SUBCOMMANDS.values():
        sub = commands.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(sub)
        sub.set_defaults(handler=cmd.handler)
    return parser


def _version() -> str:
    """The installed distribution's version (what pip reports), else the package's own."""
    import importlib.metadata

    from eager_eval import __version__

    try:
        return importlib.metadata.version("eager-eval")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return args.handler(args)
    except UsageError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    except USER_ERRORS as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# --- EagerConfig flags -------------------------------------------------------------------------


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (what the config's authors wrote), for --help."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def add_config_arguments(parser: argparse.ArgumentParser, *, exclude: Sequence[str] = (),
                         defaults: dict[str, Any] | None = None) -> None:
    """One `--flag` per EagerConfig field (underscores as dashes); values stay strings
    ('inf', 'none', '0.6') for `EagerConfig.from_mapping`; an unset flag is None."""
    docs = _field_docs(EagerConfig)
    group = parser.add_argument_group(
        "EAGer settings", "every EagerConfig field; 'none' and 'inf' are accepted where they mean "
        "something (--percentile none = fixed theta, --theta inf = never branch)")
    defaults = defaults or {}
    for f in dataclasses.fields(EagerConfig):
        if f.name in exclude:
            continue
        default = defaults.get(f.name, f.default)
        help_text = docs.get(f.name, "")
        if isinstance(f.default, Enum) and not help_text:
            help_text = "one of: " + ", ".join(m.value for m in type(f.default))
        default = default.value if isinstance(default, Enum) else default
        help_text = help_text.replace("%", "%%")
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                           help=f"{help_text} (default: {default})")
    for old, new in RENAMED.items():  # accepted, with a warning naming the new flag
        group.add_argument(f"--{old.replace('_', '-')}", dest=old, default=None,
                           help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None,
                     **fixed: Any) -> EagerConfig:
    """EagerConfig from the flags the user set, over `defaults`, with `fixed` on top."""
    values = dict(defaults or {})
    names = [*EagerConfig.field_names(), *RENAMED]
    values.update({name: getattr(args, name) for name in names
                   if getattr(args, name, None) is not None})
    for old, new in RENAMED.items():  # Python hides the DeprecationWarning from a CLI user
        if old in values:
            print(f"warning: --{old} is deprecated: it is now --{new.replace('_', '-')}",
                  file=sys.stderr)
    values.update(fixed)
    values, _ = split_auto_theta(values)  # 'auto': the default stands in until run_session
    return EagerConfig.from_mapping(values)


def theta_is_auto(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> bool:
    """--theta auto (or an `auto` default): run_session calibrates theta on the task."""
    value = getattr(args, "theta", None)
    return is_auto((defaults or {}).get("theta") if value is None else value)


# --- tasks -------------------------------------------------------------------------------------


@dataclass
class Task:
    """The prompts of one command: what to show, what to send, what to grade against."""

    name: str
    problems: list["Problem"]
    prompt_texts: list[str]
    """What goes into the chat template (question plus answer instruction)."""
    answer_type: str
    fingerprint: dict[str, Any]
    """What identifies these prompts for a resume (data hash, fields, limit...)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Written to results.json under "data"."""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl (one object a line) or .csv (header row) file."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise DataFileError(f"data file {path} must be .jsonl or .csv, got {suffix or 'no suffix'!r}")
    try:
        return _read_csv(path) if suffix == ".csv" else read_jsonl(path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataFileError(f"data file {path} is not UTF-8 {suffix[1:].upper()} text: {err}") from None


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))



def _require_fields(path: Path, rows: list[dict[str, Any]], needed: Sequence[str], hint: str) -> None:
    for number, row in enumerate(rows, 1):
        missing = [name for name in needed if row.get(name) in (None, "")]
        if missing:
            raise DataFileError(f"{path}: row {number} lacks field(s) {missing}; {hint}")


def load_data_task(path_text: str, answer_type: str, problem_field: str | None,
                   answer_field: str, limit: int | None) -> Task:
    """A `run` task from a JSONL/CSV file: math (problem, answer) or choice (question, A-D,
    answer letter)."""
    from eager_eval.datasets import LETTERS, ChoiceQuestion, MathProblem
    from eager_eval.outputs import Problem

    path = Path(path_text).expanduser()
    if not path.is_file():
        raise DataFileError(f"data file {path_text} does not exist (or is not a file)")
    rows = _read_rows(path)
    if not rows:
        raise DataFileError(f"data file {path} holds no rows")
    if limit is not None:
        rows = rows[:limit]
    problems, prompts = [], []
    if answer_type == "math":
        problem_field = problem_field or "problem"
        _require_fields(path, rows, [problem_field, answer_field],
                        "pass --problem-field/--answer-field to name the columns to use")
        for i, row in enumerate(rows):
            item = MathProblem(str(row.get("id", row.get("unique_id", i))),
                               str(row[problem_field]), str(row[answer_field]))
            problems.append(Problem(item.id, item.problem, item.answer))
            prompts.append(item.prompt)
    else:
        question_field = problem_field or "question"
        needed = [question_field, *LETTERS, answer_field]
        _require_fields(path, rows, needed,
                        f"a choice file needs columns {needed} (answer = the correct letter)")
        for i, row in enumerate(rows):
            letter = str(row[answer_field]).strip().strip("()").upper()
            if letter not in LETTERS:
                raise DataFileError(f"{path}: row {i + 1} has answer {row[answer_field]!r}; "
                                    f"it must be one of the letters {', '.join(LETTERS)}")
            item = ChoiceQuestion(str(row.get("id", i)), str(row[question_field]).strip(),
                                  tuple(str(row[c]).strip() for c in LETTERS), letter)
            problems.append(Problem(item.id, item.prompt, item.answer))
            prompts.append(item.prompt)
    info = {"path": str(path.resolve()), "sha256": _file_sha256(path), "answer_type": answer_type,
            "problem_field": problem_field, "answer_field": answer_field, "limit": limit,
            "n_prompts": len(problems)}
    fingerprint = {"data_sha256": info["sha256"], "answer_type": answer_type,
                   "problem_field": problem_field, "answer_field": answer_field,
                   "n_prompts": len(problems)}
    return Task(path.stem, problems, prompts, answer_type, fingerprint, info)


def load_demo_task(limit: int, problem_seed: int) -> Task:
    from eager_eval.demo_problems import demo_problems
    from eager_eval.outputs import Problem

    items = demo_problems(limit, problem_seed)
    problems = [Problem(p.id, p.problem, p.answer) for p in items]
    fingerprint = {"data": "demo_problems", "problem_seed": problem_seed, "n_prompts": len(items)}
    info = {"source": "eager_eval.demo_problems", "problem_seed": problem_seed,
            "levels": [p.level for p in items], "n_prompts": len(items)}
    return Task("demo", problems, [p.problem for p in items], "math", fingerprint, info)


# --- running methods ---------------------------------------------------------------------------


@dataclass
class Session:
    """What one command runs: a model, a task, the methods' configs, an output directory."""

    model: str
    task: Task
    configs: list[EagerConfig]
    output: Path
    resume: bool
    device: str
    dtype: str | None
    max_rows: int
    threads: int | None
    chat: bool
    thinking: bool
    argv: list[str]
    backend: str = "hf"
    engine_args: dict[str, Any] = field(default_factory=dict)
    """vLLM engine keyword arguments (`--engine-arg KEY=VALUE`)."""
    auto_theta: bool = False
    """--theta auto: the configs hold a placeholder theta until run_session calibrates it."""
    calibration: "Calibration | None" = None
    """The theta=auto calibration the run uses (measured now, or read back on --resume)."""


def _base_fingerprint(session: Session) -> dict[str, Any]:
    from eager_eval import __version__

    return {
        "model": session.model,
        **session.task.fingerprint,
        "backend": session.backend,
        "dtype": session.dtype or "auto",
        "device": session.device.split(":")[0] if session.backend == "hf" else "vllm",
        "chat": session.chat,
        "thinking": session.thinking,
        "eager_eval": __version__,
    }


def _tree_files(session: Session) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Each method's tree file under OUTPUT/trees and the fingerprint it must hold."""
    base = _base_fingerprint(session)
    return {config.mode.value: (session.output / "trees" / f"{config.mode.value}.jsonl",
                                {**base, "settings": config.to_dict()})
            for config in session.configs}


def _check_resume(session: Session) -> None:
    """A resume from other settings fails here, before a model loads (reads headers only)."""
    from eager_eval.store import check_resumable

    if session.resume:
        for path, fingerprint in _tree_files(session).values():
            check_resumable(path, fingerprint)


def _open_stores(session: Session):
    """One JsonlTreeStore per method: the run's first write, once model and data are checked.
    Without --resume an earlier run's trees are replaced (atomically) by a new header."""
    from eager_eval.store import JsonlTreeStore

    stores = {}
    for mode, (path, fingerprint) in _tree_files(session).items():
        if path.exists() and not session.resume:
            with open(path, "rb") as fh:
                n_trees = max(sum(1 for _ in fh) - 1, 0)
            if n_trees:
                print(f"note: {path} holds {n_trees} trees of an earlier run; starting over "
                      "(pass --resume to continue that run instead)", file=sys.stderr)
        stores[mode] = JsonlTreeStore(path, fingerprint, start_over=not session.resume)
    return stores


def _check_before_loading(session: Session) -> None:
    """Every check that needs no model, so a bad name, path or device costs no load and leaves
    no trace: the model name (and a GGUF's magic), the output directory, the device, the dtype."""
    from eager_eval.models import check_device, dtype_name, resolve_model

    resolve_model(session.model)
    check_output_dir(session.output)
    if session.backend == "hf":
        dtype_name(session.dtype)
        check_device(session.device)


def _load_engine(session: Session) -> "Engine":
    from eager_eval.engines import load_engine
    from eager_eval.models import gguf_cache_dir, resolve_model

    resolved = resolve_model(session.model)  # fails fast, before torch is imported
    _set_cpu_threads(session)
    if resolved.is_gguf and not (gguf_cache_dir(resolved) / "config.json").is_file():
        print(f"first use of {session.model}: converting its GGUF once (about 30-60 s) ...",
              file=sys.stderr, flush=True)
    if session.backend == "vllm":  # the configs differ only in mode: one engine serves all
        return load_engine(session.model, backend="vllm", dtype=session.dtype,
                           config=session.configs[0], **session.engine_args)
    return load_engine(session.model, device=session.device, dtype=session.dtype,
                       max_rows=session.max_rows)


def _set_cpu_threads(session: Session) -> None:
    """--threads N, else on a CPU the free cores (eager_eval.threads): torch's default of one
    spinning thread per core is slow on a machine other jobs keep busy."""
    if session.backend != "hf" or (session.threads is None
                                   and not session.device.startswith("cpu")):
        return
    import torch

    from eager_eval.threads import default_threads

    threads = session.threads or default_threads(torch.get_num_threads())
    torch.set_num_threads(threads)
    print(f"torch threads: {threads}" + ("" if session.threads else " (free CPUs; set with "
          "--threads N)"), file=sys.stderr)


def _resume_command(argv: Sequence[str]) -> str:
    args = list(argv)
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join([PROG, *args])


def run_session(session: Session, *, progress: bool = True) -> tuple[list["MethodRun"], Path] | int:
    """Check the input, lock the output directory, load the model, run every method, write
    the outputs.

    Nothing is written into the output directory (beyond its lock file, removed again) until
    the model, device, settings and prompts have passed their checks, so a start that fails
    leaves it as it was, and a later --resume is not refused over a run that never started.
    Returns (method runs, results.json path), or EXIT_INTERRUPTED after Ctrl-C: the trees
    finished so far are on disk, and the message gives the command that resumes.
    """
    _check_before_loading(session)
    with OutputLock(session.output):  # a second run into this directory stops here
        if session.auto_theta and session.resume:
            _reuse_calibration(session)  # the theta the stored trees were grown with
        if not session.auto_theta:
            _check_resume(session)
        engine = _load_engine(session)
        prompts = _encode_prompts(engine, session)
        if session.auto_theta:  # theta is part of the trees' fingerprint: calibrate first
            _calibrate(session, engine, prompts)
            _check_resume(session)
        return _run_and_write(session, engine, prompts, progress)


def _run_and_write(session: Session, engine: "Engine", prompts: Sequence["PromptInput"],
                   progress: bool) -> tuple[list["MethodRun"], Path] | int:
    from eager_eval.outputs import command_line, write_run_dir
    from eager_eval.progress import RunProgress

    _write_calibration(session)  # before the first tree: --resume reads it back
    stores = _open_stores(session)
    try:
        with RunProgress(enabled=progress) as bars:
            runs = [_run_method(engine, prompts, session.task, config,
                                stores[config.mode.value], bars)
                    for config in session.configs]
    except KeyboardInterrupt:
        saved = ", ".join(f"{name}: {len(store)}" for name, store in stores.items())
        print(f"\ninterrupted; finished trees are saved under {session.output / 'trees'} "
              f"({saved}).\nContinue with: {_resume_command(session.argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for store in stores.values():
            store.close()
    path = write_run_dir(
        session.output, runs, session.task.problems, answer_type=session.task.answer_type,
        command=command_line(session.argv), model=session.model, task=session.task.name,
        decode=lambda ids: engine.tokenizer.decode(list(ids), skip_special_tokens=True),
        engine_info=engine.info(), extra={"data": session.task.info, **(
            {"theta_auto": session.calibration.to_dict()} if session.calibration else {})},
        warn=lambda message: print(f"warning: {message}", file=sys.stderr),
    )
    return runs, path


CALIBRATION_FILE = "theta_auto.json"
"""OUTPUT/theta_auto.json: the theta=auto calibration of a run, written before its first tree,
so that --resume continues with the theta the stored trees were grown with."""


def _reuse_calibration(session: Session) -> None:
    """--resume of a theta=auto run: the recorded theta, no warm-up (if one was recorded)."""
    from eager_eval.calibration import Calibration
    from eager_eval.store import StoreError

    path = session.output / CALIBRATION_FILE
    if not path.is_file():
        return  # interrupted before the calibration ended: calibrate again
    try:
        calibration = Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as err:
        raise StoreError(f"{path} is unreadable ({err}); delete it to calibrate theta "
                         "again") from None
    _use_calibration(session, calibration)
    print(f"theta=auto: {calibration.theta:g}, recorded in {path}", file=sys.stderr)


def _calibrate(session: Session, engine: "Engine", prompts: Sequence["PromptInput"]) -> None:
    """theta=auto: the warm-up (eager_eval.calibration) on this task's prompts."""
    from eager_eval.calibration import calibrate_theta

    started = time.perf_counter()
    calibration = calibrate_theta(engine.new_backend, [p.tokens for p in prompts],
                                  session.configs[0])
    _use_calibration(session, calibration)
    print(f"theta=auto: {calibration.theta:g} nats, the {calibration.quantile:.2%} quantile of "
          f"{calibration.n_entropies} top-{session.configs[0].entropy_k} entropies "
          f"({calibration.n_prompts} prompts x {calibration.warmup_tokens} tokens, "
          f"{time.perf_counter() - started:.1f} s)", file=sys.stderr)


def _write_calibration(session: Session) -> None:
    """OUTPUT/theta_auto.json, where theta was calibrated (the run's first write)."""
    from eager_eval.outputs import atomic_write

    if session.calibration is not None:
        session.output.mkdir(parents=True, exist_ok=True)
        atomic_write(session.output / CALIBRATION_FILE,
                     json.dumps(session.calibration.to_dict(), indent=2) + "\n")


def _use_calibration(session: Session, calibration: "Calibration") -> None:
    session.configs = [c.replace(theta=calibration.theta) for c in session.configs]
    session.calibration = calibration
    session.auto_theta = False


def _encode_prompts(engine: "Engine", session: Session) -> list["PromptInput"]:
    """The prompts' token ids, once the settings passed the model's own checks (vocabulary,
    end-of-thinking marker) and every prompt fits the model's context."""
    from eager_eval.engines import check_prompt_fits
    from eager_eval.runner import PromptInput

    for config in session.configs:
        engine.verify(config)
    context = getattr(engine, "context_length", None)
    prompts = []
    for problem, text in zip(session.task.problems, session.task.prompt_texts, strict=True):
        tokens = engine.encode_prompt(text, chat=session.chat, enable_thinking=session.thinking)
        check_prompt_fits(len(tokens), context, prompt=repr(problem.id), model=session.model)
        prompts.append(PromptInput(tuple(tokens)))
    _warn_past_context(prompts, context, session)
    return prompts


def _warn_past_context(prompts: Sequence["PromptInput"], context: int | None,
                       session: Session) -> None:
    """Sequences may grow past the context by --max-new-tokens: say so once, not silently."""
    max_new = max(config.max_new_tokens for config in session.configs)
    longest = max((len(p.tokens) for p in prompts), default=0)
    if context is not None and longest + max_new > context:
        print(f"warning: a prompt of {longest} tokens plus --max-new-tokens {max_new} passes "
              f"{session.model}'s context of {context} tokens; sequences that long read past "
              f"it (lower --max-new-tokens to at most {context - longest})", file=sys.stderr)


def _run_method(engine: "Engine", prompts: Sequence["PromptInput"], task: Task,
                config: EagerConfig, store: "JsonlTreeStore", bars: "RunProgress") -> "MethodRun":
    """One method over all prompts; each tree is on disk the moment it is finished."""
    from eager_eval.answers import labels_verifier
    from eager_eval.metrics import score_run
    from eager_eval.outputs import MethodRun
    from eager_eval.progress import CountingBackend
    from eager_eval.runner import run

    stored = list(store)
    bar = bars.method(config.mode.value, len(prompts),
                      resumed_round0=sum(t.round == 0 for t in stored),
                      resumed_later=sum(t.round > 0 for t in stored))
    targets = [p.target for p in task.problems]

    result = run(
        prompts, CountingBackend(engine.new_backend(config), on_step=bar.tokens), config,
        verifier=labels_verifier(targets, task.answer_type) if config.mode is Mode.EAGER else None,
        store=store, on_tree_done=bar.tree_done,  # the runner saves each tree as it ends
    )
    scores, metrics = score_run(result.prompts, targets, task.answer_type)
    return MethodRun(config, result, scores, metrics, resumed_trees=len(stored))


def results_table(entries: Sequence[dict[str, Any]], title: str | None = None):
    """The rich table of results.json "runs" entries (metric names as TaskMetrics.to_dict)."""
    from rich.table import Table

    resumed = any(e.get("resumed_trees") for e in entries)
    table = Table(title=title, caption="* resumed: wall time of the trees generated after the "
                  "resume only" if resumed else None)
    for name, justify in [("Method", "left"), ("Pass@k", "right"), ("Cons@k", "right"),
                          ("Pass Rate", "right"), ("#T", "right"), ("#S mean (min-max)", "right"),
                          ("Savings vs FP", "right"), ("Wall s", "right")]:
        table.add_column(name, justify=justify)
    for e in entries:
        m = e["metrics"]
        savings = e.get("savings_vs_full_parallel")
        table.add_row(
            e["method"], f"{m['pass_at_k']:.3f}", f"{m['cons_at_k']:.3f}", f"{m['pass_rate']:.3f}",
            f"{m['tokens_generated']:,}",
            f"{m['seqs_mean']:.2f} ({m['seqs_min']}-{m['seqs_max']})",
            "-" if savings is None else ("baseline" if e["method"] == "full_parallel"
                                         else f"{savings:.1%}"),
            f"{e['wall_seconds']:.1f}" + ("*" if e.get("resumed_trees") else ""),
        )
    return table


def print_results(path: Path) -> None:
    from rich.console import Console

    data = json.loads(path.read_text(encoding="utf-8"))
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(results_table(data["runs"], title=f"{data['task']} - {data['model']}"))
    console.print(f"outputs: {path.parent}")


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument("--backend", choices=["hf", "vllm"], default="hf",
                       help="hf: transformers, CPU or CUDA (default); vllm: a vLLM engine "
                       "(docs/VLLM.md)")
    group.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                       dest="engine_arg", help="vllm: one engine keyword argument, the value read "
                       "as YAML (repeatable), e.g. --engine-arg gpu_memory_utilization=0.85")
    group.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    group.add_argument("--dtype", default=None, help="auto (default: float32 on CPU, bf16 on "
                       "CUDA), float32, bfloat16 or float16")
    group.add_argument("--max-rows", type=_positive_int, default=64, metavar="N",
                       help="most sequences decoded together in one batch (default: 64); each "
                       "prompt's tree reserves its cap (M in eager modes), later prompts wait")
    group.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                       help="CPU threads for torch (default on a CPU: the CPUs not kept busy by "
                       "other processes, i.e. usable CPUs minus the 1-minute load average, at "
                       "least 1, at most torch's own default)")
    group.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True,
                       help="apply the model's chat template (default: on)")
    group.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=True,
                       help="enable_thinking for templates that read it, e.g. Qwen3 (default: on)")


def _add_output_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--output", "-o", required=required, metavar="DIR",
                        help="run directory: results.json, <method>.jsonl, trees/ (resume)"
                        + ("" if required else " (default: runs/demo-<timestamp>)"))
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --output: finished trees are read "
                        "back, not generated again (the settings must be the same)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")


def _backend_args(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """(backend, engine kwargs) from --backend and the --engine-arg KEY=VALUE pairs."""
    import yaml

    engine_args: dict[str, Any] = {}
    for pair in args.engine_arg:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--engine-arg", pair, "KEY=VALUE, e.g. gpu_memory_utilization=0.85")
        try:
            engine_args[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            engine_args[key.strip()] = value
    if engine_args and args.backend != "vllm":
        raise ConfigError("--engine-arg", args.engine_arg[0], "used with --backend vllm (the hf "
                          "backend takes --device, --dtype and --max-rows)")
    return args.backend, engine_args


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


# --- demo --------------------------------------------------------------------------------------

DEMO_MODEL = "smollm2-135m"
DEMO_LIMIT = 8
DEMO_DEFAULTS: dict[str, Any] = {
    "max_seqs": 5,
    "max_new_tokens": 96,
    "theta": 2.6,
    "percentile": 99.0,
    "temperature": 0.6,
    "think_end": None,  # SmolLM2 is not a thinking model: no marker ends branching
}
"""Demo settings, sized for a 2-core CPU (the paper's M = 32 and 32k tokens take hours there):
8 problems (two of each level), M = 5, 96 tokens, all four methods in about 2.5 minutes.

Chosen so that both halves of the method show on a 135M model (measured, seed 0, on the
reference 2-core VM; benchmarks/RESULTS.md): EAGer-init ends with 1-5 sequences per prompt and
2 of 8 prompts hit M, so EAGer-adapt moves unspent budget to them (8 sequences) and still
decodes about a third fewer tokens than Full Parallel. Measured alternatives at theta 2.6:
M = 4 put 3 prompts at the cap, and EAGer-adapt then spent nearly all of the budget (5%
saved); M = 6 or 8 put none there and nothing moved. Above theta 2.65 forks become rare:
`--theta auto` measures 2.68 here (the 99% quantile of the warm-up's entropies,
docs/THETA.md), where EAGer-init ended with 1-2 sequences per prompt. The paper's 2.0 is too low
for this model: its top-20 entropies run high (median 1.1, 99th percentile 2.67 of
ln 20 = 3.0 nats)."""
DEMO_THREADS = 1
"""Torch threads benchmarks/savings.py pins, so its timings compare across runs. The demo itself
uses the free-CPU default of `eager_eval.threads` (1 on a busy machine, more on an idle one)."""
DEMO_MODES = ("full_parallel", "eager_init", "eager_adapt", "eager")


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Offline demo: the embedded SmolLM2-135M on generated arithmetic problems; runs every "
        "method on the same prompts with the same M and seed and prints the comparison table.")
    parser.add_argument("--limit", type=_positive_int, default=DEMO_LIMIT, metavar="N",
                        help=f"demo problems (default: {DEMO_LIMIT}; levels cycle 1-4)")
    parser.add_argument("--problem-seed", type=int, default=0, metavar="S",
                        help="seed of the generated problems (default: 0)")
    parser.add_argument("--modes", default=",".join(DEMO_MODES), metavar="LIST",
                        help=f"comma-separated methods (default: {','.join(DEMO_MODES)})")
    parser.add_argument("--model", default=DEMO_MODEL, help=f"model (default: {DEMO_MODEL})")
    _add_output_arguments(parser, required=False)
    add_config_arguments(parser, exclude=("mode",), defaults=DEMO_DEFAULTS)
    _add_engine_arguments(parser)


def _parse_modes(text: str) -> list[str]:
    modes = [m.strip().lower() for m in text.split(",") if m.strip()]
    known = [m.value for m in Mode]
    for m in modes:
        if m not in known:
            raise ConfigError("modes", m, f"a comma-separated list of: {', '.join(known)}")
    if not modes:
        raise ConfigError("modes", text, f"a comma-separated list of: {', '.join(known)}")
    return list(dict.fromkeys(modes))  # once each, in the order given


@subcommand("demo", "offline demo: EAGer vs Full Parallel on the embedded SmolLM2-135M",
            _add_demo_arguments)
def demo_command(args: argparse.Namespace) -> int:
    modes = _parse_modes(args.modes)
    configs = [config_from_args(args, DEMO_DEFAULTS, mode=mode) for mode in modes]
    if args.resume and not args.output:
        raise ConfigError("resume", True, "used with --output DIR (the run to continue)")
    argv = list(args.argv)
    if args.output:
        output = Path(args.output)
    else:  # named in argv too: results.json's command and the resume hint must point here
        output = Path("runs", f"demo-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
        argv += ["--output", str(output)]
    session = Session(args.model, load_demo_task(args.limit, args.problem_seed), configs, output,
                      args.resume, args.device, args.dtype, args.max_rows,
                      args.threads, args.chat, args.thinking, argv, *_backend_args(args),
                      auto_theta=theta_is_auto(args, DEMO_DEFAULTS))
    from eager_eval import demo_summary

    print("\n".join(demo_summary.settings_lines(session.model, len(session.task.problems),
                                                session.configs, session.auto_theta)), flush=True)
    code = _finish(session, args.progress)
    if code == 0:
        results = session.output / "results.json"
        print("\n".join(demo_summary.legend_lines() + demo_summary.story_lines(results)
                        + demo_summary.next_lines(session.output,
                                                  demo_summary.show_prompt_of(results))))
    return code


def _finish(session: Session, progress: bool) -> int:
    started = time.perf_counter()
    outcome = run_session(session, progress=progress)
    if isinstance(outcome, int):
        return outcome
    _, path = outcome
    print_results(path)
    print(f"total {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


# --- run ---------------------------------------------------------------------------------------


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run one method on a data file and write DIR/results.json and DIR/<method>.jsonl. Trees "
        "are saved as they finish (DIR/trees/<method>.jsonl): after Ctrl-C or a crash, the same "
        "command with --resume continues without redoing them. Running other methods into the "
        "same DIR adds them to results.json, with savings against full_parallel.\n\n"
        "Data: .jsonl (one object a line) or .csv. --answer-type math reads fields 'problem' "
        "and 'answer' (see --problem-field/--answer-field); --answer-type choice reads "
        "'question', 'A', 'B', 'C', 'D' and 'answer' (the correct letter).")
    parser.add_argument("--model", required=True,
                        help="smollm2-135m, a .gguf file, a save_pretrained directory or a hub id")
    parser.add_argument("--data", required=True, metavar="FILE", help="a .jsonl or .csv file")
    parser.add_argument("--answer-type", choices=["math", "choice"], default="math",
                        help="math (math-verify equivalence) or choice (letter A-D); default math")
    parser.add_argument("--problem-field", default=None, metavar="NAME",
                        help="field holding the question (default: problem; choice: question)")
    parser.add_argument("--answer-field", default="answer", metavar="NAME",
                        help="field holding the target (default: answer)")
    parser.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                        help="only the first N rows")
    _add_output_arguments(parser, required=True)
    add_config_arguments(parser)
    _add_engine_arguments(parser)


@subcommand("run", "run one method on a JSONL/CSV data file (resumable)", _add_run_arguments)
def run_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # bad settings fail before any file or model is read
    task = load_data_task(args.data, args.answer_type, args.problem_field, args.answer_field,
                          args.limit)
    session = Session(args.model, task, [config], Path(args.output), args.resume, args.device,
                      args.dtype, args.max_rows, args.threads, args.chat, args.thinking, args.argv,
                      *_backend_args(args), auto_theta=theta_is_auto(args))
    return _finish(session, args.progress)


# --- report and sweep: their modules own the options and the work -----------------------------


def _register_report_and_sweep() -> None:
    """Both modules import only argparse/config at the top (cheap); the work loads lazily."""
    from eager_eval.report import add_report_arguments, report_command
    from eager_eval.sweep import add_sweep_arguments, sweep_command

    subcommand("report", "leaderboard (Markdown, CSV, HTML) and plots from eager-eval, lm-eval "
               "and Inspect results", add_report_arguments)(report_command)
    subcommand("sweep", "run a grid of models x tasks x modes x theta x M (resumable), then "
               "report", add_sweep_arguments)(sweep_command)


_register_report_and_sweep()


def _register_show() -> None:
    from eager_eval.show import add_show_arguments, show_command

    subcommand("show", "draw one prompt's trees: forks, entropy vs threshold, answers, "
               "reallocation (any eager-eval, lm-eval or Inspect output)",
               add_show_arguments)(show_command)


_register_show()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
