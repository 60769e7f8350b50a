"""`eager-eval sweep CONFIG.yaml`: run a grid of `eager-eval run` cells, resumably, then report.

The grid and its checks are `sweep_grid.py`. Here: each cell runs as its own `eager-eval run`
subprocess in its own directory; a cell whose directory already holds a finished run with the
cell's settings is skipped, so an interrupted sweep picks up where it stopped, and each
unfinished cell continues its own partial run through `--resume`. After the cells, the report
is built over the whole output directory into `<output>/report/`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TextIO

from eager_eval.core.config import THETA_AUTO as AUTO
from eager_eval.core.config import ConfigError, EagerConfig
from eager_eval.common.files import atomic_write, check_output_dir, output_path
from eager_eval.common.errors import UserError
from eager_eval.common.settings import number_or_none, renamed_settings

from eager_eval.frontends.cli.sweep_grid import (  # noqa: F401 (the sweep's API)
    run_command_line,
    Cell,
    MAX_CELLS,
    SweepConfig,
    SweepConfigError,
    TaskSpec,
    cell_dir_name,
    check_run_args,
    check_tasks,
    expand_cells,
    grid_size,
    load_sweep_config,
    model_slug,
    parse_sweep_config,
    parse_task,
)

SWEEP_MANIFEST = "sweep.json"
MANIFEST_TOOL = "eager-eval-sweep"


class CellStatus(str, Enum):
    """Where a cell stands; the value is what sweep.json and the summary line show."""

    TODO = "todo"
    """Not finished: no results.json, or one without this cell's method (runs with --resume)."""
    DONE = "done"
    """Finished before this sweep started: skipped."""
    MISMATCH = "mismatch"
    """Its directory holds a run with other settings: never overwritten, counted as failed."""
    RAN = "ran"
    """Run (or resumed) by this sweep, to the end."""
    FAILED = "failed"
    """Run by this sweep, but it failed or ended without its results."""
    PLANNED = "planned"
    """--dry-run: would run."""
    PENDING = "pending"
    """Not reached (a --fail-fast stop before it)."""

    @property
    def is_failure(self) -> bool:
        return self in (CellStatus.FAILED, CellStatus.MISMATCH)


def cell_status(cell: Cell) -> tuple[CellStatus, str]:
    """(TODO | DONE | MISMATCH, why). Done = results.json holds this cell's finished run."""
    results = cell.output_dir / "results.json"
    if not results.is_file():
        return CellStatus.TODO, "no results.json yet"
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return CellStatus.TODO, f"results.json unreadable ({err}); running again with --resume"
    if not isinstance(data, dict) or data.get("tool") != "eager-eval":
        return CellStatus.MISMATCH, "results.json is not an eager-eval run"
    for run in data.get("runs") or []:
        if not isinstance(run, dict) or run.get("method") != cell.mode:
            continue
        differ = _settings_differ(cell, run.get("settings") or {}, "theta_auto" in data)
        if differ:
            return CellStatus.MISMATCH, "holds a run with other settings: " + "; ".join(differ)
        return CellStatus.DONE, "finished"
    return CellStatus.TODO, f"results.json has no {cell.mode} run yet"


def _settings_differ(cell: Cell, recorded: Mapping[str, Any], calibrated: bool) -> list[str]:
    wanted = cell.config.to_dict()
    recorded = renamed_settings(recorded, warn=False)  # an older run's `topk` is `entropy_k`
    differ = []
    if "theta" in cell.explicit and cell.theta_auto != calibrated:
        differ.append(f"theta {AUTO if calibrated else 'a number'} vs {cell.theta_label}")
    for name in cell.explicit:
        if name == "theta" and (cell.theta_auto or calibrated):
            continue  # the calibrated value is the run's to choose
        if name in recorded:
            a, b = recorded[name], wanted[name]
            if str(a) != str(b) and not _same_number(a, b):
                differ.append(f"{name} {a!r} vs {b!r}")
    return differ


def _same_number(a: Any, b: Any) -> bool:
    x, y = number_or_none(a), number_or_none(b)
    return x is not None and x == y


# --- data of the built-in tasks ---------------------------------------------------------------
@contextlib.contextmanager
def _data_dir_env(data_dir: Path | None) -> Iterator[None]:
    if data_dir is None:
        yield
        return
    from eager_eval.pipeline.datasets import DATA_DIR_ENV

    old = os.environ.get(DATA_DIR_ENV)
    os.environ[DATA_DIR_ENV] = str(data_dir)
    try:
        yield
    finally:
        if old is None:
            del os.environ[DATA_DIR_ENV]
        else:
            os.environ[DATA_DIR_ENV] = old


def prepare_task(task: TaskSpec, sweep: SweepConfig) -> TaskSpec:
    """A built-in task as a `--data` file in <output>/data/, written once: every cell (and
    every resume, whose store checks the file's hash) reads the same bytes. The prompts are
    `eager_eval.pipeline.datasets`' (the lm-eval and Inspect tasks'), GPQA's choices in its fixed order."""
    if task.kind != "builtin":
        return task
    folder = sweep.output / "data"
    folder.mkdir(parents=True, exist_ok=True)
    if task.name == "aime25":
        path = folder / "aime25.jsonl"
        if not path.is_file():
            from eager_eval.pipeline.datasets import load_aime25

            with _data_dir_env(sweep.data_dir):
                rows = [{"id": p.id, "problem": p.problem, "answer": p.answer} for p in load_aime25()]
            atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return replace(task, data=path)
    path = folder / "gpqa_diamond.csv"
    if not path.is_file():
        import io

        from eager_eval.pipeline.datasets import LETTERS, load_gpqa_diamond

        with _data_dir_env(sweep.data_dir):
            questions = load_gpqa_diamond()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "question", *LETTERS, "answer"])
        for q in questions:
            writer.writerow([q.id, q.question, *q.choices, q.answer])
        atomic_write(path, buffer.getvalue())
    return replace(task, data=path)


# --- running a cell -------------------------------------------------------------------------
class CellFailed(RuntimeError):
    """A cell's `eager-eval run` exited with an error."""


def run_cell(model: str, data: TaskSpec, config: EagerConfig, output_dir: str | Path,
             resume: bool = True, *, limit: int | None = None,
             settings: Sequence[str] = ("mode", "theta", "max_seqs"),
             run_args: Mapping[str, Any] | None = None,
             env: Mapping[str, str] | None = None) -> None:
    """Run one cell as `eager-eval run ... --resume --output <output_dir>` in a subprocess.

    A subprocess per cell keeps cells independent (a crash or an out-of-memory in one cell does
    not take the sweep down, and GPU memory is freed between cells) and lets `eager-eval run`
    own its resumable outputs. Raises CellFailed on a non-zero exit.
    """
    args = run_command_line(model, data, config, Path(output_dir), resume=resume, limit=limit,
                            settings=settings, run_args=run_args)
    program = [sys.executable, "-c", "import sys; from eager_eval.frontends.cli.main import main; sys.exit(main())"]
    print("$ eager-eval " + shlex.join(args), flush=True)
    completed = subprocess.run(program + args, env={**os.environ, **(env or {})}, check=False)
    if completed.returncode != 0:
        raise CellFailed(f"eager-eval {args[0]} exited with code {completed.returncode}")


CellRunner = Callable[..., None]
"""run_cell's signature: (model, task, config, output_dir, resume=True, *, limit, settings,
run_args, env) -> None; raises CellFailed."""


@dataclass
class CellOutcome:
    cell: Cell
    status: CellStatus
    message: str = ""


@dataclass
class SweepOutcome:
    cells: list[CellOutcome]
    report_rows: int | None = None
    """Rows in the report; None when no report was built."""

    @property
    def failed(self) -> list[CellOutcome]:
        return [c for c in self.cells if c.status.is_failure]


def run_sweep(sweep: SweepConfig, *, runner: CellRunner = run_cell, dry_run: bool = False,
              report: bool | None = None, fail_fast: bool = False,
              out: TextIO | None = None, max_cells: int | None = MAX_CELLS) -> SweepOutcome:
    """Run every unfinished cell, then build the report over the output directory.

    Progress lines go to `out` (default stdout); the report's warnings to stderr.
    """
    out = out if out is not None else sys.stdout
    cells = expand_cells(sweep, max_cells)
    outcomes: list[CellOutcome] = []
    prepared: dict[str, TaskSpec] = {}
    env = {"EAGER_EVAL_DATA_DIR": str(sweep.data_dir)} if sweep.data_dir else {}
    for number, cell in enumerate(cells, 1):
        status, why = cell_status(cell)
        prefix = f"[{number}/{len(cells)}] {cell.name}"
        if status is CellStatus.DONE:
            print(f"{prefix}: done, skipped", file=out, flush=True)
            outcomes.append(CellOutcome(cell, CellStatus.DONE, why))
            continue
        if status is CellStatus.MISMATCH:
            message = f"{cell.output_dir} {why}: remove that directory or change `output` (not overwritten)"
            print(f"{prefix}: error: {message}", file=out, flush=True)
            outcomes.append(CellOutcome(cell, CellStatus.MISMATCH, message))
            if fail_fast:
                break
            continue
        if dry_run:
            print(f"{prefix}: to run ({why}) -> {cell.output_dir}", file=out, flush=True)
            outcomes.append(CellOutcome(cell, CellStatus.PLANNED, why))
            continue
        print(f"{prefix}: running -> {cell.output_dir}", file=out, flush=True)
        try:
            if cell.task.name not in prepared:
                prepared[cell.task.name] = prepare_task(cell.task, sweep)
            cell.output_dir.mkdir(parents=True, exist_ok=True)
            runner(cell.model, prepared[cell.task.name], cell.config, cell.output_dir, resume=True,
                   limit=sweep.limit, settings=cell.explicit, run_args=sweep.run_args, env=env)
        except (CellFailed, ConfigError, OSError) as err:
            outcomes.append(CellOutcome(cell, CellStatus.FAILED, str(err)))
            print(f"{prefix}: failed: {err}", file=out, flush=True)
        else:
            status, why = cell_status(cell)
            if status is CellStatus.DONE:
                outcomes.append(CellOutcome(cell, CellStatus.RAN, "finished"))
            else:
                outcomes.append(CellOutcome(cell, CellStatus.FAILED, f"the run ended but {why}"))
                print(f"{prefix}: failed: the run ended but {why}", file=out, flush=True)
        _write_manifest(sweep, outcomes, cells)
        if fail_fast and outcomes[-1].status is CellStatus.FAILED:
            break
    result = SweepOutcome(outcomes)
    if dry_run:
        return result
    _write_manifest(sweep, outcomes, cells)
    if sweep.report if report is None else report:
        from eager_eval.report.build import build_report

        built = build_report([sweep.output], sweep.output / "report",
                             title=f"EAGer sweep: {sweep.name or sweep.output.name}", warn=sys.stderr)
        result.report_rows = len(built.board.rows)
        if built.has_rows:
            print(f"report: {sweep.output / 'report' / 'leaderboard.html'}", file=out)
    return result


def _write_manifest(sweep: SweepConfig, outcomes: list[CellOutcome], cells: list[Cell]) -> None:
    by_dir = {o.cell.output_dir: o for o in outcomes}
    entries = []
    for cell in cells:
        outcome = by_dir.get(cell.output_dir)
        entries.append({
            "model": cell.model, "task": cell.task.name, "mode": cell.mode,
            "theta": cell.theta_label if cell.config.is_branching else None,
            "max_seqs": cell.config.max_seqs, "dir": str(cell.output_dir),
            "status": (outcome.status if outcome else CellStatus.PENDING).value,
            "message": outcome.message if outcome else "",
        })
    manifest = {"tool": MANIFEST_TOOL, "config": str(sweep.source) if sweep.source else None,
                "name": sweep.name, "cells": entries}
    sweep.output.mkdir(parents=True, exist_ok=True)
    atomic_write(sweep.output / SWEEP_MANIFEST, json.dumps(manifest, indent=2) + "\n")


# --- command line ---------------------------------------------------------------------------
def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The `sweep` options, for a CLI that builds its own subparser (see add_sweep_parser)."""
    parser.description = (
        "Run every cell of the grid in CONFIG.yaml (models x tasks x modes x theta x M) with "
        "`eager-eval run --resume`, one directory per cell under the config's `output`; cells "
        "already finished are skipped. Then write the report into <output>/report/. Exit code 0 "
        "when every cell finished, 1 when some failed (the report covers the rest), 2 for a bad "
        "config.")
    parser.add_argument("config", metavar="CONFIG.yaml", help="sweep configuration (see configs/)")
    parser.add_argument("--output", "-o", metavar="DIR", help="override the config's `output`")
    parser.add_argument("--limit", type=int, metavar="N", help="override the config's `limit`")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the cells and whether each is done; run nothing")
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    parser.add_argument("--max-cells", type=int, default=MAX_CELLS, metavar="N",
                        help=f"refuse a grid of more than N cells (default: {MAX_CELLS})")


def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `sweep` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "sweep", help="run a grid of models x tasks x modes x theta x M (resumable), then report")
    add_sweep_arguments(parser)
    parser.set_defaults(func=sweep_command, handler=sweep_command)
    return parser


def sweep_command(args: argparse.Namespace) -> int:
    try:
        sweep = load_sweep_config(args.config)
        if args.output:
            sweep.output = output_path(args.output)
        if args.limit is not None:
            if args.limit < 1:
                raise SweepConfigError("--limit", args.limit, "an integer >= 1")
            sweep.limit = args.limit
        if args.max_cells < 1:
            raise SweepConfigError("--max-cells", args.max_cells, "an integer >= 1")
        if not args.dry_run:
            check_output_dir(sweep.output, option="output")
        expand_cells(sweep, args.max_cells)
        check_tasks(sweep)
    except UserError as err:
        print(f"eager-eval: error: {err}", file=sys.stderr)
        return 2
    outcome = run_sweep(sweep, dry_run=args.dry_run, report=False if args.no_report else None,
                        fail_fast=args.fail_fast, max_cells=args.max_cells)
    counts: dict[str, int] = {}
    for cell in outcome.cells:
        counts[cell.status.value] = counts.get(cell.status.value, 0) + 1
    print("sweep: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for failed in outcome.failed:
        print(f"eager-eval: error: {failed.cell.name}: {failed.message}", file=sys.stderr)
    return 1 if outcome.failed else 0


__all__ = ["CellStatus", "SweepConfig", "TaskSpec", "Cell", "parse_sweep_config", "parse_task",
           "load_sweep_config", "expand_cells", "cell_status", "prepare_task", "run_command_line",
           "run_cell", "run_sweep", "add_sweep_parser", "add_sweep_arguments", "sweep_command",
           "SweepConfigError", "CellFailed", "check_tasks", "check_run_args", "grid_size",
           "MAX_CELLS"]
