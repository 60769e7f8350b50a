"""Read runs from the three formats the report accepts; anything else becomes a warning.

1. An `eager-eval run`/`demo` directory: `results.json` ("tool": "eager-eval") plus one
   `<method>.jsonl` of per-prompt records per run.
2. An lm-eval results JSON (`OUT/<model>/results_<date>.json`) plus, with `--log_samples`,
   `samples_<task>_<date>.jsonl` beside it (same date): `report.lm_eval_reader`.
3. An Inspect log (`.json` or `.eval`): `report.inspect_reader`.

All three keep one `record.PromptRecord` per prompt (docs/FORMAT.md); a `Run` holds them with
the task metrics the source recorded. Directories are searched recursively. A file that cannot
be read, or is none of the three, is reported and skipped: one bad file never hides the readable
runs. Numbers are taken as the source recorded them; where the records determine a metric the
aggregate left out (S_p's range, #T), they fill it, and a total that disagrees with them is said.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from eager_eval.report.inspect_reader import read_inspect
from eager_eval.report.lm_eval_reader import read_lm_eval
from eager_eval.report.reading import (
    DEFAULT_METHOD,
    SWEEP_MANIFEST_TOOL,
    UnreadableRun,
    fill_from_records,
    json_kind,
    load_json,
    numbers,
    read_jsonl,
    records_of,
    rounds_of,
)
from eager_eval.report.runs import (
    METHODS,
    MISSING,
    Run,
    as_number,
    normalise_method,
    normalise_settings,
    short,
)

RECORDED_METRICS = ("pass_at_k", "cons_at_k", "pass_rate", "tokens_generated", "n_prompts")
"""What an eager-eval results.json always records per method: a missing one is a warning."""

_RESULT_SUFFIXES = (".json", ".eval")


@dataclass
class ReadResult:
    runs: list[Run] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0
    """Result files read successfully (a file may hold several runs)."""


def display_path(path: Path) -> str:
    """Relative to the working directory when below it: shorter in tables and messages."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --- finding and dispatching ----------------------------------------------------------------


def read_runs(paths: Iterable[str | Path]) -> ReadResult:
    """Every run found under `paths` (files or directories), with a warning per problem."""
    result = ReadResult()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            result.warnings.append(f"{raw}: no such file or directory")
        elif path.is_dir():
            _read_directory(path, result)
        else:
            _read_one(path, result, explicit=True)
    return result


def _read_directory(root: Path, result: ReadResult) -> None:
    found_before = result.files
    tried = 0

    def on_error(err: OSError) -> None:
        result.warnings.append(f"{err.filename}: cannot list directory ({err.strerror})")

    for directory, dirs, files in os.walk(root, onerror=on_error):
        directory = Path(directory)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "results.json" in files and _is_eager_eval_file(directory / "results.json"):
            # an eager-eval run directory: results.json names its JSONL files; the rest
            # (trees/, the resume store) is the run's own business
            dirs[:] = []
            tried += 1
            _read_one(directory / "results.json", result)
            continue
        claimed: set[str] = set()
        for name in sorted(files):
            if name.endswith(_RESULT_SUFFIXES):
                tried += 1
                claimed |= _read_one(directory / name, result)
        orphans = [n for n in sorted(files) if n.endswith(".jsonl") and n not in claimed]
        if orphans and not any(n.endswith(_RESULT_SUFFIXES) for n in files):
            result.warnings.append(
                f"{display_path(directory)}: {len(orphans)} JSONL file(s) ({orphans[0]}, ...) but "
                "no results file: an unfinished or interrupted run? skipped"
            )
    if result.files == found_before:
        what = "no readable results" if tried else "no result files (.json, .eval)"
        result.warnings.append(f"{display_path(root)}: {what} found in this directory")


def result_files(root: Path) -> list[Path]:
    """The result files under `root` (for `eager-eval show` and the drill-down)."""
    if (root / "results.json").is_file():
        return [root / "results.json"]
    found = []
    for file in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in file.relative_to(root).parts):
            continue
        if file.name == "results.json" or file.suffix == ".eval" or (
                file.suffix == ".json" and (file.name.startswith("results_")
                                            or json_kind(_json_or_none(file)) == "inspect")):
            found.append(file)
    return found


def _is_eager_eval_file(path: Path) -> bool:
    return json_kind(_json_or_none(path)) == "eager-eval"


def _json_or_none(path: Path) -> Any:
    try:
        return load_json(path)
    except UnreadableRun:
        return None


def _read_one(path: Path, result: ReadResult, explicit: bool = False) -> set[str]:
    """Read one file into `result`; returns the names of sample files it used (claimed)."""
    shown = display_path(path)
    if path.suffix not in _RESULT_SUFFIXES:
        if explicit:
            result.warnings.append(
                f"{shown}: not a result file (expected an eager-eval run directory, an lm-eval "
                "results_*.json or an Inspect .json/.eval log); skipped")
        return set()
    try:
        read = _read_file(path)
    except UnreadableRun as err:
        result.warnings.append(f"{shown}: {err}; skipped")
        return set()
    if read is None:
        return set()
    runs, warnings, claimed = read
    result.warnings.extend(f"{shown}: {w}" for w in warnings)
    if runs:
        result.files += 1
        result.runs.extend(runs)
    return claimed


def read_file_runs(path: Path) -> list[Run]:
    """The runs of one result file, warnings dropped; raises UnreadableRun."""
    read = _read_file(path)
    if read is None:
        raise UnreadableRun("an eager-eval sweep manifest, not a run")
    return read[0]


def _read_file(path: Path) -> tuple[list[Run], list[str], set[str]] | None:
    """(runs, warnings, claimed sample files) of one file; None for a sweep manifest."""
    if path.suffix == ".eval":
        return read_inspect(path)
    data = load_json(path)
    kind = json_kind(data)
    if kind == "sweep":
        return None
    if kind == "eager-eval":
        return _read_eager_eval(path, data)
    if kind == "lm-eval":
        return read_lm_eval(path, data)
    if kind == "inspect":
        return read_inspect(path)
    raise UnreadableRun("not an eager-eval, lm-eval or Inspect result file")


# --- 1. eager-eval ------------------------------------------------------------------------------


def _read_eager_eval(path: Path, data: dict) -> tuple[list[Run], list[str], set[str]]:
    warnings: list[str] = []
    if data.get("format_version") != 1:
        warnings.append(f"format_version {data.get('format_version')!r} (this report reads 1); "
                        "reading it anyway")
    runs_data = data.get("runs")
    if not isinstance(runs_data, list) or not runs_data:
        raise UnreadableRun("eager-eval results.json holds no runs (\"runs\" is empty or missing)")
    model, task = data.get("model"), data.get("task")
    for key, value in (("model", model), ("task", task)):
        if not isinstance(value, str) or not value.strip():
            what = "lacks" if not value else f"has {short(value)} as"
            raise UnreadableRun(f"eager-eval results.json {what} \"{key}\" (a name is text)")
    runs, claimed = [], set()
    for number, entry in enumerate(runs_data, 1):
        if not isinstance(entry, dict) or "method" not in entry:
            warnings.append(f"run {number}: an entry without \"method\" ignored")
            continue
        method = entry["method"]
        if not isinstance(method, str) or normalise_method(method) not in METHODS:
            warnings.append(f"run {number}: method {short(method)} is not one of "
                            f"{', '.join(METHODS)}; ignored")
            continue
        where = f"{method}: "
        raw_metrics = entry.get("metrics")
        if not isinstance(raw_metrics, dict):
            if raw_metrics is not None:
                warnings.append(f"{where}metrics is {short(raw_metrics)}, not a mapping")
            raw_metrics = {}
        metrics = numbers(raw_metrics, where, warnings)
        missing = [name for name in RECORDED_METRICS if name not in raw_metrics]
        if missing:
            warnings.append(f"{method}: no {', '.join(missing)} recorded; shown as "
                            f"{MISSING}")
        run = Run("eager-eval", path, model, normalise_method(method), task,
                  normalise_settings(entry.get("settings"), warnings, where),
                  metrics, pool_rounds=rounds_of(entry.get("rounds"), where, warnings),
                  stored_savings=_savings(entry.get("savings_vs_full_parallel"), where, warnings),
                  prompts_sha256=_text_or_none(entry.get("prompts_sha256"), "prompts_sha256",
                                               where, warnings))
        sample_path = _samples_path(path, entry.get("samples"), where, warnings)
        if sample_path is not None:
            claimed.add(sample_path.name)
            run.records = records_of(read_jsonl(sample_path, warnings), warnings,
                                     sample_path.name)
            _check_prompt_count(run, warnings)
            fill_from_records(run, warnings)
        runs.append(run)
    return runs, warnings, claimed


def _savings(value: Any, where: str, warnings: list[str]) -> float | None:
    number = as_number(value)
    if value is not None and (number is None or not math.isfinite(number)):
        warnings.append(f"{where}savings_vs_full_parallel is {short(value)}, not a number; "
                        "computed again from the runs")
        return None
    return number


def _text_or_none(value: Any, name: str, where: str, warnings: list[str]) -> str | None:
    if value is not None and not isinstance(value, str):
        warnings.append(f"{where}{name} is {short(value)}, not text; ignored")
        return None
    return value


def _samples_path(results: Path, samples: Any, where: str, warnings: list[str]) -> Path | None:
    """The run's samples file: a file inside the run directory, named relative to it. A path
    that leads out of it (absolute, `..`, a link) is not read: a hand-edited results.json must
    not make the report read and publish another file."""
    if samples is None or samples == "":
        return None
    if not isinstance(samples, str):
        warnings.append(f"{where}samples is {short(samples)}, not a file name; per-prompt plots "
                        "leave this run out")
        return None
    folder = results.parent.resolve()
    candidate = (results.parent / samples).resolve()
    if not candidate.is_relative_to(folder):
        warnings.append(f"{where}samples file {samples} lies outside the run directory "
                        f"{display_path(results.parent)}; not read (per-prompt plots leave this "
                        "run out)")
        return None
    if not candidate.is_file():
        warnings.append(f"{where}samples file {samples} is missing; per-prompt plots leave this "
                        "run out")
        return None
    return candidate


def _check_prompt_count(run: Run, warnings: list[str]) -> None:
    n = run.metrics.get("n_prompts")
    if n is not None and run.records is not None and n != len(run.records):
        warnings.append(f"{run.method}: n_prompts is {n:g} but the samples file has "
                        f"{len(run.records)} prompts")


__all__ = ["ReadResult", "UnreadableRun", "read_runs", "read_file_runs", "result_files",
           "display_path", "DEFAULT_METHOD", "SWEEP_MANIFEST_TOOL"]
