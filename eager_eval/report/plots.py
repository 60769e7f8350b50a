"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function returns PNG bytes, or None when no run carries the data it needs, so the
report only shows plots that say something. One panel per task.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Callable, Sequence

from eager_eval.report.leaderboard import Leaderboard, Row, pareto_front
from eager_eval.report.runs import METHOD_LABELS, METHODS, Run, format_number

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

METHOD_COLOURS = {
    "full_parallel": "#7f7f7f",
    "eager_init": "#1f77b4",
    "eager_adapt": "#ff7f0e",
    "eager": "#2ca02c",
    "deepconf": "#9467bd",
}
MODEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
RUN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf")
DPI = 110
_MAX_LEGEND = 14


def _figure(n_panels: int) -> tuple["Figure", list["Axes"]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(n_panels, 2)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(6.4 * cols, 4.8 * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    return fig, axes


def _png(fig: "Figure") -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _by_task(rows: Sequence[Row], has_data: Callable[[Run], bool]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = defaultdict(list)
    for row in rows:
        if has_data(row.run):
            out[row.run.task].append(row.run)
    return dict(out)


def accuracy_vs_tokens(board: Leaderboard) -> bytes | None:
    """Pass@k against #T per run, colour = method, marker = model; the task's Pareto front."""
    tasks = _by_task(board.rows, lambda r: r.metrics.get("pass_at_k") is not None
                     and r.metrics.get("tokens_generated") is not None)
    if not tasks:
        return None
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(r.model for runs in tasks.values() for r in runs))
    marker = {m: MODEL_MARKERS[i % len(MODEL_MARKERS)] for i, m in enumerate(models)}
    fig, axes = _figure(len(tasks))
    for ax, (task, runs) in zip(axes, tasks.items()):
        points = [(r.metrics["tokens_generated"], r.metrics["pass_at_k"]) for r in runs]
        for run, (x, y) in zip(runs, points):
            ax.scatter(x, 100 * y, s=55, marker=marker[run.model], zorder=3,
                       color=METHOD_COLOURS.get(run.method, "#000000"), edgecolor="black",
                       linewidth=0.5)
            if run.theta is not None:
                ax.annotate(f"θ={format_number(run.theta)}", (x, 100 * y), textcoords="offset points",
                            xytext=(5, 4), fontsize=7)
        front = sorted((points[i] for i in pareto_front(points)), key=lambda p: (p[0], -p[1]))
        if len(front) > 1:
            ax.step([p[0] for p in front], [100 * p[1] for p in front], where="post",
                    color="black", linestyle="--", linewidth=1, alpha=0.6, zorder=2)
        xs = [p[0] for p in points]
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("#T (tokens generated)")
        ax.set_ylabel("Pass@k (%)")
        ax.set_ylim(-2, 102)  # a share: never below 0 or above 100, even when all points tie
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], marker="o", linestyle="", color=METHOD_COLOURS[m], label=METHOD_LABELS[m])
               for m in METHODS if any(r.method == m for rs in tasks.values() for r in rs)]
    handles += [Line2D([], [], marker=marker[m], linestyle="", color="white", markeredgecolor="black",
                       label=m) for m in models]
    handles.append(Line2D([], [], color="black", linestyle="--", label="Pareto front"))
    axes[0].legend(handles=handles, fontsize=8, loc="best")
    return _png(fig)


def sequences_per_prompt(board: Leaderboard) -> bytes | None:
    """S_p per prompt for every run whose samples were read: where the budget went."""
    tasks = _by_task(board.rows, lambda r: bool(r.prompts)
                     and any(p.n_sequences is not None for p in r.prompts))
    if not tasks:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(len(tasks))
    for ax, (task, runs) in zip(axes, tasks.items()):
        caps = set()
        for i, run in enumerate(runs[:_MAX_LEGEND]):
            stats = [p for p in run.prompts or [] if p.n_sequences is not None]
            ax.plot([p.prompt_idx for p in stats], [p.n_sequences for p in stats], marker="o",
                    markersize=4, linewidth=0.8, alpha=0.8, color=RUN_COLOURS[i % len(RUN_COLOURS)],
                    label=run.label)
            if run.max_seqs is not None:
                caps.add(run.max_seqs)
        for cap in sorted(caps):
            ax.axhline(cap, color="grey", linestyle=":", linewidth=1)
        ax.set_title(task + (f" (first {_MAX_LEGEND} runs)" if len(runs) > _MAX_LEGEND else ""))
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("prompt")
        ax.set_ylabel("sequences (S_p); dotted: M")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _png(fig)


def branch_points(board: Leaderboard) -> bytes | None:
    """Where forks happened: generated position vs the entropy that triggered them."""
    tasks = _by_task(board.rows, lambda r: bool(r.branches))
    if not tasks:
        return None
    fig, axes = _figure(len(tasks))
    for ax, (task, runs) in zip(axes, tasks.items()):
        levels: list[float] = []  # entropies and thresholds: the y range shows both
        for i, run in enumerate(runs[:_MAX_LEGEND]):
            colour = RUN_COLOURS[i % len(RUN_COLOURS)]
            branches = run.branches or []
            levels += [b.entropy for b in branches]
            ax.scatter([b.position for b in branches], [b.entropy for b in branches], s=12,
                       alpha=0.6, color=colour, label=f"{run.label} ({len(branches)} forks)")
            if run.theta is not None and math.isfinite(run.theta):
                ax.axhline(run.theta, color=colour, linestyle=":", linewidth=1)
                levels.append(run.theta)
        low, high = min(levels), max(levels)
        pad = max(0.05, 0.08 * (high - low))
        ax.set_ylim(low - pad, high + pad)
        ax.set_title(task + (f" (first {_MAX_LEGEND} runs)" if len(runs) > _MAX_LEGEND else ""))
        ax.set_xlabel("position (generated tokens)")
        ax.set_ylabel("top-K entropy (nats); dotted: θ")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _png(fig)


PLOTS: tuple[tuple[str, str, Callable[[Leaderboard], bytes | None]], ...] = (
    ("accuracy_vs_tokens.png", "Pass@k vs tokens generated", accuracy_vs_tokens),
    ("sequences_per_prompt.png", "Sequences spent per prompt", sequences_per_prompt),
    ("branch_points.png", "Where branches happened", branch_points),
)
"""(file name, caption, drawing function) of every plot the report can make."""
