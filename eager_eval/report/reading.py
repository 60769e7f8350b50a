"""What every reader of the report shares: the error a file that cannot be read raises,
JSON and JSONL loading, the prompt records a file holds, and the metrics those records
determine. `readers.py` and the per-harness readers (`lm_eval_reader.py`, `inspect_reader.py`)
build on it; it imports none of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from eager_eval.pipeline.record import PromptRecord
from eager_eval.report.runs import MISSING, Run, as_number, metric_key

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
        except (ValueError, TypeError, AttributeError):
            bad += 1
    if bad:
        warnings.append(f"{where}: {bad} line(s) that are no prompt record ignored")
    return records


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


def numbers(metrics: dict, where: str, warnings: list[str]) -> dict[str, float]:
    """Our metrics among `metrics`, as numbers; one that is not a number is said."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        key = metric_key(str(name))
        number = as_number(value)
        if key is not None and number is not None:
            out.setdefault(key, number)
        elif key is not None:
            not_a_number(where + str(name), value, warnings)
    return out


def not_a_number(name: str, value: Any, warnings: list[str]) -> None:
    """A metric of ours the source holds as text, null or NaN: blank in the table, said so."""
    warnings.append(f"{name} is {value!r}, not a number; shown as {MISSING}")


__all__ = ["UnreadableRun", "DEFAULT_METHOD", "SWEEP_MANIFEST_TOOL", "load_json", "json_kind",
           "read_jsonl", "records_of", "fill_from_records", "numbers", "not_a_number"]
