"""What every reader of the report shares: the error a file that cannot be read raises,
JSON and JSONL loading, the prompt records a file holds, and the metrics those records
determine. `readers.py` and the per-harness readers (`lm_eval_reader.py`, `inspect_reader.py`)
build on it; it imports none of them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from eager_eval.pipeline.record import PoolRound, PromptRecord, pool_rounds_of
from eager_eval.report.runs import MISSING, Run, as_number, is_unrecorded, metric_key, short

SWEEP_MANIFEST_TOOL = "eager-eval-sweep"
"""`sweep.json` written by `eager-eval sweep`: known, not a run, skipped quietly."""

DEFAULT_METHOD = "eager_adapt"
"""EagerConfig's default mode: what an EAGer adapter ran when no mode was recorded."""


class UnreadableRun(ValueError):
    """A file looked like a result but could not be read; the message says why."""


# --- files --------------------------------------------------------------------------------------


def load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise UnreadableRun(f"invalid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UnreadableRun(f"cannot read ({err})") from None


def json_kind(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if data.get("tool") == "eager-eval":
        return "eager-eval"
    if data.get("tool") == SWEEP_MANIFEST_TOOL:
        return "sweep"
    if isinstance(data.get("results"), dict) and ("config" in data or "configs" in data):
        return "lm-eval"
    if isinstance(data.get("eval"), dict) and "version" in data and "status" in data:
        return "inspect"
    return None


def read_jsonl(path: Path, warnings: list[str]) -> list[dict]:
    rows: list[dict] = []
    bad = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    if bad:
        warnings.append(f"{path.name}: {bad} unreadable line(s) ignored")
    return rows


def records_of(rows: Iterable[Any], warnings: list[str], where: str) -> list[PromptRecord]:
    """The prompt records among `rows` (any version); a row that is none is said once."""
    records, bad = [], 0
    for row in rows:
        try:
            records.append(PromptRecord.from_dict(row))
        except (ValueError, TypeError, AttributeError, OverflowError):
            bad += 1
    if bad:
        warnings.append(f"{where}: {bad} line(s) that are no prompt record ignored")
    return records


def rounds_of(value: Any, where: str, warnings: list[str]) -> list[PoolRound]:
    """The pool's rounds as a source recorded them; a value that is none (a hand-edited file)
    is said and left out, never a traceback."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        warnings.append(f"{where}rounds is {short(value)}, not a list of rounds; left out")
        return []
    try:
        return pool_rounds_of(value)
    except (ValueError, TypeError, OverflowError) as err:
        warnings.append(f"{where}rounds are unreadable ({err}); left out")
        return []


# --- metrics from the records ---------------------------------------------------------------


def fill_from_records(run: Run, warnings: list[str]) -> None:
    """Metrics the records determine, where the aggregate left them out; a total that
    disagrees with the records is reported (the records win for #T)."""
    prompts = run.prompts or []
    seqs = [p.n_sequences for p in prompts]
    tokens = [p.tokens_generated for p in prompts]
    if prompts and all(s is not None for s in seqs):
        run.metrics.setdefault("seqs_min", min(seqs))
        run.metrics.setdefault("seqs_max", max(seqs))
        run.metrics.setdefault("seqs_mean", sum(seqs) / len(seqs))
    if prompts:
        run.metrics.setdefault("n_prompts", len(prompts))
    if prompts and all(t is not None for t in tokens):
        total = sum(tokens)  # type: ignore[arg-type]
        recorded = run.metrics.get("tokens_generated")
        if recorded is not None and abs(recorded - total) > 0.5:
            warnings.append(
                f"{run.task}/{run.method}: tokens_generated {recorded:g} in the results but the "
                f"per-prompt samples sum to {total}; using {total}"
            )
        run.metrics["tokens_generated"] = total


RATES = ("pass_at_k", "pass_at_1", "cons_at_k", "pass_rate", "conf_cons_at_k", "top10_cons_at_k",
         "top90_cons_at_k")
"""Metrics that are shares of prompts: in [0, 1] (so are the fixed-k pass@k)."""

COUNTS = ("n_prompts", "tokens_generated", "tokens_in_outputs", "seqs_min", "seqs_max")
"""Metrics that count: whole numbers >= 0 (seqs_mean is a mean of counts: a number >= 0)."""


def numbers(metrics: dict, where: str, warnings: list[str]) -> dict[str, float]:
    """Our metrics among `metrics`, as numbers; one that is not a number, or not one the
    metric can be (a rate outside [0, 1], a negative or fractional count, infinity), is said
    and left out (shown as —)."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        key = metric_key(str(name))
        if key is None:
            continue
        number = as_number(value)
        if number is None:
            if not is_unrecorded(key, value):
                not_a_number(where + str(name), value, warnings)
            continue
        problem = metric_problem(key, number)
        if problem is not None:
            warnings.append(f"{where}{name} is {value!r}: {problem}; shown as {MISSING}")
            continue
        out.setdefault(key, number)
    return out


def metric_problem(name: str, value: float) -> str | None:
    """Why `value` cannot be the metric `name` (None: it can)."""
    if not math.isfinite(value):
        return "not a finite number"
    if (name in RATES or name.startswith("pass@")) and not 0 <= value <= 1:
        return "a share of prompts must be in [0, 1]"
    if name in COUNTS and (value < 0 or value != int(value)):
        return "a count must be a whole number >= 0"
    if name == "seqs_mean" and value < 0:
        return "a mean count must be >= 0"
    return None


def not_a_number(name: str, value: Any, warnings: list[str]) -> None:
    """A metric of ours the source holds as text, null or NaN: blank in the table, said so."""
    warnings.append(f"{name} is {value!r}, not a number; shown as {MISSING}")


__all__ = ["UnreadableRun", "DEFAULT_METHOD", "SWEEP_MANIFEST_TOOL", "load_json", "json_kind",
           "read_jsonl", "records_of", "rounds_of", "fill_from_records", "numbers", "not_a_number"]
