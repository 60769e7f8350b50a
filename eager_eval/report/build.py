"""build_report: read runs, build the leaderboard, write Markdown, CSV, HTML and PNG plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, TextIO

from eager_eval.common.files import OutputDirError
from eager_eval.report.html import to_html
from eager_eval.report.leaderboard import Leaderboard, build_leaderboard, to_csv, to_markdown
from eager_eval.report.plots import PLOTS
from eager_eval.report.readers import UnreadableRun, read_runs
from eager_eval.report.trees import RunTrees, read_file

OUTPUT_FILES = ("leaderboard.md", "leaderboard.csv", "leaderboard.html")


@dataclass
class Report:
    board: Leaderboard
    files: list[Path] = field(default_factory=list)
    """Every file written (tables first, then plots)."""

    @property
    def warnings(self) -> list[str]:
        return self.board.warnings

    @property
    def has_rows(self) -> bool:
        return bool(self.board.rows)


def trees_of(board: Leaderboard) -> list[RunTrees]:
    """The per-prompt trees of the board's runs, in row order, where their files hold them
    (a run without samples simply has no drill-down; the table already warned about it)."""
    by_file: dict[Path, list[RunTrees]] = {}
    out = []
    for row in board.rows:
        run = row.run
        if run.source not in by_file:
            try:
                by_file[run.source] = read_file(run.source)
            except UnreadableRun:
                by_file[run.source] = []
        out += [t for t in by_file[run.source] if t.method == run.method and t.task == run.task]
    return out


def build_report(inputs: Iterable[str | Path], output: str | Path, *,
                 title: str = "EAGer leaderboard", plots: bool = True,
                 warn: TextIO | None = None) -> Report:
    """Read every run under `inputs`; write the report into `output` (created if needed).

    Nothing is written when no run could be read. Warnings go to the bottom of the Markdown
    and HTML, and are printed to `warn` (e.g. sys.stderr) when given.
    """
    found = read_runs(inputs)
    board = build_leaderboard(found.runs)
    board.warnings[:0] = found.warnings  # reading problems first, then comparison problems
    if warn is not None:
        for message in board.warnings:
            print(f"warning: {message}", file=warn)
    report = Report(board)
    if not board.rows:
        return report
    out = Path(output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputDirError(f"cannot create report directory {out}: {err.strerror}") from None
    images: list[tuple[str, str, bytes]] = []
    if plots:
        for name, caption, draw in PLOTS:
            png = draw(board)
            if png is not None:
                (out / name).write_bytes(png)
                images.append((name, caption, png))
    texts = {
        "leaderboard.md": to_markdown(board, [(n, c) for n, c, _ in images], title),
        "leaderboard.csv": to_csv(board),
        "leaderboard.html": to_html(board, images, title, trees_of(board)),
    }
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
        report.files.append(out / name)
    report.files += [out / name for name, _, _ in images]
    return report
