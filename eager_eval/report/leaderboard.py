"""The leaderboard: one row per model x method x task (x theta x M), savings, checks, tables.

Savings vs Full Parallel (METHOD.md section 5) are computed here from the two runs' #T,
1 - T_method / T_full_parallel, with `metrics.token_savings`. The baseline is a Full Parallel
run of the same model and task with the same M, temperature, max_new_tokens and number of
prompts (where both runs record them): the same budget on the same prompts. Among several,
the one from the same file wins (an `eager-eval run` writes all methods into one
results.json), then the same harness.

Theta and M are the axes a sweep varies, so runs that differ only there are separate rows.
Two runs with the same row key, or runs of one model on one task that disagree on a setting
every method should share (temperature, top_p, top_k, max_new_tokens, K, prompts), are
reported as warnings; every run stays in the table.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from eager_eval.pipeline.metrics import token_savings
from eager_eval.report.readers import display_path
from eager_eval.report.runs import (
    METRIC_NAMES,
    MISSING,
    SHARED_SETTINGS,
    Run,
    format_number,
)

_BASELINE_MATCH = ("max_seqs", "temperature", "max_new_tokens", "n_prompts", "prompts")
"""What a Full Parallel run must share with a run to be its savings baseline ("prompts": the
hash of the prompts both graded, where both recorded it)."""


@dataclass
class Row:
    run: Run
    savings: float | None = None
    """1 - #T / #T(baseline); None when there is no comparable Full Parallel run or no #T."""
    baseline: Run | None = None
    on_front: bool | None = None
    """On its task's accuracy-vs-tokens Pareto front; None when Pass@k or #T is missing."""

    @property
    def is_baseline(self) -> bool:
        return self.run.method == "full_parallel"


@dataclass
class Leaderboard:
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)

    @property
    def pass_ks(self) -> list[int]:
        """The fixed k of the unbiased pass@k that any run reports, k = 1 included."""
        ks = {int(name[5:]) for row in self.rows for name in row.run.metrics if name.startswith("pass@")}
        return sorted(ks)

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(row.run.task for row in self.rows))


def build_leaderboard(runs: Iterable[Run]) -> Leaderboard:
    runs = sorted(runs, key=_row_order)
    board = Leaderboard([Row(run) for run in runs])
    _check_duplicates(runs, board.warnings)
    _check_shared_settings(runs, board.warnings)
    for row in board.rows:
        _attach_savings(row, runs, board.warnings)
    _mark_fronts(board.rows)
    return board


def _row_order(run: Run) -> tuple:
    theta = run.theta if run.theta is not None else -1.0
    return (run.task, run.model, run.method_order, run.method, theta, run.max_seqs or 0,
            run.harness, str(run.source))


def _describe(run: Run) -> str:
    return f"{run.model} / {run.method_label} / {run.task}"


def _sources(runs: Iterable[Run]) -> str:
    return ", ".join(dict.fromkeys(display_path(r.source) for r in runs))


def _check_duplicates(runs: list[Run], warnings: list[str]) -> None:
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    for same in groups.values():
        if len(same) < 2:
            continue
        names = sorted({k for r in same for k in r.settings})
        differ = [
            f"{name} ({' vs '.join(_fmt_setting(r.settings.get(name)) for r in same)})"
            for name in names
            if len({_hashable(r.settings.get(name)) for r in same}) > 1
        ]
        what = "they differ in " + ", ".join(differ) if differ else "with the same settings"
        warnings.append(f"{_describe(same[0])} (θ={_fmt_setting(same[0].theta)}, "
                        f"M={_fmt_setting(same[0].max_seqs)}) appears {len(same)} times, {what}: "
                        f"all rows kept; sources: {_sources(same)}")


def _check_shared_settings(runs: list[Run], warnings: list[str]) -> None:
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.model, run.task)].append(run)
    for (model, task), same in groups.items():
        for name in SHARED_SETTINGS:
            values: dict[Any, list[Run]] = defaultdict(list)
            for run in same:
                value = run.setting(name)
                if value is not None:
                    values[_hashable(value)].append(run)
            if len(values) > 1:
                listed = "; ".join(f"{_fmt_setting(v)} in {_sources(rs)}" for v, rs in values.items())
                warnings.append(f"runs of {model} on {task} disagree on {name}, which should match "
                                f"for a fair comparison: {listed}")


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _fmt_setting(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_number(value)
    return str(value)


def _comparable(run: Run, baseline: Run) -> list[str]:
    """The settings on which a Full Parallel candidate differs from the run (known on both)."""
    differ = []
    for name in _BASELINE_MATCH:
        a, b = run.setting(name), baseline.setting(name)
        if a is not None and b is not None and a != b:
            differ.append("other prompts (data file or limit)" if name == "prompts"
                          else f"{name} {_fmt_setting(b)} vs {_fmt_setting(a)}")
    return differ


def _attach_savings(row: Row, runs: list[Run], warnings: list[str]) -> None:
    run = row.run
    if row.is_baseline:
        return
    candidates = [r for r in runs if r.method == "full_parallel" and r.model == run.model
                  and r.task == run.task]
    if not candidates:
        return
    comparable = [r for r in candidates if not _comparable(run, r)]
    if not comparable:
        reasons = "; ".join(", ".join(_comparable(run, r)) for r in candidates)
        warnings.append(f"{_describe(run)} (θ={_fmt_setting(run.theta)}, M={_fmt_setting(run.max_seqs)}): "
                        f"no comparable Full Parallel run ({reasons}); savings left blank")
        return
    rank = lambda r: (r.source != run.source, r.harness != run.harness, str(r.source))  # noqa: E731
    comparable.sort(key=rank)
    best = [r for r in comparable if rank(r)[:2] == rank(comparable[0])[:2]]
    baseline = best[0]
    totals = {r.metrics.get("tokens_generated") for r in best}
    if len(totals) > 1:
        warnings.append(f"{_describe(run)}: {len(best)} equally close Full Parallel runs with different "
                        f"#T ({_sources(best)}); savings use {display_path(baseline.source)}")
    row.baseline = baseline
    mine, theirs = run.metrics.get("tokens_generated"), baseline.metrics.get("tokens_generated")
    if mine is None or theirs is None:
        return
    if theirs <= 0:
        warnings.append(f"{_describe(run)}: the Full Parallel run has #T = {theirs:g}; savings left blank")
        return
    row.savings = token_savings(mine, theirs)
    stored = run.stored_savings
    if stored is not None and baseline.source == run.source and abs(stored - row.savings) > 1e-9:
        warnings.append(f"{_describe(run)}: results.json says savings {stored:.6f}, its #T give "
                        f"{row.savings:.6f}; the table shows the latter")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indexes of points (tokens, accuracy) no other point beats: fewer-or-equal tokens and
    higher-or-equal accuracy, one of them strictly. Equal points are all on the front."""
    front = []
    for i, (t, a) in enumerate(points):
        dominated = any((t2 <= t and a2 >= a) and (t2 < t or a2 > a)
                        for j, (t2, a2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def _mark_fronts(rows: list[Row]) -> None:
    by_task: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.run.metrics.get("pass_at_k") is not None and row.run.metrics.get("tokens_generated") is not None:
            by_task[row.run.task].append(row)
    for task_rows in by_task.values():
        points = [(r.run.metrics["tokens_generated"], r.run.metrics["pass_at_k"]) for r in task_rows]
        front = set(pareto_front(points))
        for i, row in enumerate(task_rows):
            row.on_front = i in front


# --- tables ---------------------------------------------------------------------------------
def csv_columns(board: Leaderboard) -> list[str]:
    extra = [f"pass@{k}" for k in board.pass_ks]
    return (["model", "task", "method", "harness", "theta", "max_seqs", "temperature", "seed",
             "max_new_tokens"] + list(METRIC_NAMES) + extra
            + ["savings_vs_full_parallel", "pareto_front", "baseline_source", "source"])


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)


def to_csv(board: Leaderboard) -> str:
    """Machine-readable: full precision, fractions (not percent), empty cell = not recorded."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = csv_columns(board)
    writer.writerow(columns)
    for row in board.rows:
        run = row.run
        values: dict[str, Any] = {
            "model": run.model, "task": run.task, "method": run.method, "harness": run.harness,
            "theta": run.theta, "max_seqs": run.max_seqs,
            "temperature": run.settings.get("temperature"), "seed": run.settings.get("seed"),
            "max_new_tokens": run.settings.get("max_new_tokens"),
            "savings_vs_full_parallel": row.savings, "pareto_front": row.on_front,
            "baseline_source": display_path(row.baseline.source) if row.baseline else None,
            "source": display_path(run.source),
        }
        values.update(run.metrics)
        writer.writerow([_csv_value(values.get(c)) for c in columns])
    return out.getvalue()


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}"


def _int(value: float | None) -> str:
    return MISSING if value is None else f"{round(value):,}"


def _seqs(metrics: dict) -> str:
    mean = metrics.get("seqs_mean")
    low, high = metrics.get("seqs_min"), metrics.get("seqs_max")
    if mean is None:
        return MISSING
    text = f"{mean:.2f}"
    if low is not None and high is not None:
        text += f" ({round(low)}–{round(high)})"
    return text


def _savings(row: Row) -> str:
    if row.is_baseline:
        return "baseline"
    if row.savings is None:
        return MISSING
    return f"{100 * row.savings:.1f}".replace("-", "−")


def display_columns(board: Leaderboard) -> list[str]:
    extra = [f"pass@{k}" for k in board.pass_ks if k != 1]
    return (["Model", "Task", "Method", "θ", "M", "Temp", "Seed", "Pass@k %", "pass@1 %",
             "Cons@k %", "Conf Cons@k %", "Top10 Cons@k %", "Top90 Cons@k %", "PR %", "#T",
             "#S mean (min–max)", "Savings %"] + [f"{c} %" for c in extra]
            + ["Prompts", "Front", "Source"])


def display_rows(board: Leaderboard) -> list[list[str]]:
    """The table as text, shared by Markdown and HTML: percentages, '—' where not recorded."""
    out = []
    for row in board.rows:
        run, m = row.run, row.run.metrics
        pass1 = m.get("pass_at_1", m.get("pass@1"))
        cells = [
            run.model, run.task, run.method_label,
            _fmt_setting(run.theta), _fmt_setting(run.max_seqs),
            _fmt_setting(run.settings.get("temperature")), _fmt_setting(run.settings.get("seed")),
            _pct(m.get("pass_at_k")), _pct(pass1), _pct(m.get("cons_at_k")),
            _pct(m.get("conf_cons_at_k")), _pct(m.get("top10_cons_at_k")),
            _pct(m.get("top90_cons_at_k")), _pct(m.get("pass_rate")),
            _int(m.get("tokens_generated")), _seqs(m), _savings(row),
        ]
        cells += [_pct(m.get(f"pass@{k}")) for k in board.pass_ks if k != 1]
        cells += [_int(m.get("n_prompts")), "✓" if row.on_front else "",
                  f"{run.harness}: {display_path(run.source)}"]
        out.append(cells)
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(board: Leaderboard, plots: Iterable[tuple[str, str]] = (), title: str = "EAGer leaderboard") -> str:
    """plots: (file name, caption) of PNGs written beside the Markdown."""
    columns = display_columns(board)
    lines = [f"# {title}", ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---:" if _is_numeric(c) else "---" for c in columns) + "|")
    for cells in display_rows(board):
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    lines += ["", LEGEND, ""]
    for name, caption in plots:
        lines += [f"## {caption}", "", f"![{caption}]({name})", ""]
    lines += ["## Warnings", ""]
    lines += [f"- {w}" for w in board.warnings] if board.warnings else ["None."]
    return "\n".join(lines) + "\n"


def _is_numeric(column: str) -> bool:
    return column not in ("Model", "Task", "Method", "Source", "Front")


LEGEND = (
    "Pass@k: share of prompts with at least one correct sequence among the S_p generated. "
    "pass@1 and pass@k (fixed k): unbiased estimator of Chen et al. (2021), over prompts with "
    "S_p >= k. Cons@k: majority vote correct. Conf Cons@k: confidence-weighted vote correct; "
    "Top10 / Top90 Cons@k: the weighted vote of the 10% / 90% most confident sequences "
    "(DeepConf-low / -high; docs/CONFIDENCE.md). PR: mean per-prompt fraction of correct sequences. "
    "#T: tokens generated, each shared prefix once. #S: sequences per prompt. Savings: "
    "1 - #T / #T(Full Parallel, same model, task, M and prompts). Front: on the task's "
    "accuracy-vs-tokens Pareto front. θ is — for Full Parallel and DeepConf (they never branch). "
    f"{MISSING} = not recorded by the source. Definitions: docs/METRICS.md."
)
