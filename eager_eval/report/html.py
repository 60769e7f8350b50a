"""A self-contained HTML page: the table, the plots as base64 PNG, each run's trees prompt by
prompt (collapsible, `drilldown.py`), the warnings. No external assets (no scripts, fonts or
stylesheets to fetch), so the file can be mailed or archived."""

from __future__ import annotations

import base64
from html import escape
from typing import Iterable

from eager_eval.report.drilldown import STYLE as TREE_STYLE
from eager_eval.report.drilldown import trees_section
from eager_eval.report.leaderboard import LEGEND, Leaderboard, display_columns, display_rows
from eager_eval.report.trees import RunTrees

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table.leaderboard { border-collapse: collapse; font-size: 12px; }
table.leaderboard th, table.leaderboard td { border: 1px solid #ccc; padding: 3px 6px; }
table.leaderboard th { background: #f0f3f7; position: sticky; top: 0; }
table.leaderboard td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.leaderboard tr.baseline td { background: #f7f7f7; color: #555; }
table.leaderboard tr:hover td { background: #fff8e1; }
table.leaderboard td.source { font-size: 10px; color: #666; word-break: break-all;
                              min-width: 12em; max-width: 20em; }
table.leaderboard td.text { white-space: nowrap; }
div.table-wrap { overflow-x: auto; }
p.legend { max-width: 70em; font-size: 12px; color: #555; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
ul.warnings li { color: #8a4b00; }
"""


def to_html(board: Leaderboard, plots: Iterable[tuple[str, str, bytes]] = (),
            title: str = "EAGer leaderboard", trees: Iterable[RunTrees] = ()) -> str:
    """plots: (file name, caption, PNG bytes), embedded as data: URIs; trees: the runs whose
    prompts get a drill-down."""
    columns = display_columns(board)
    numeric = {i for i, c in enumerate(columns) if c not in ("Model", "Task", "Method", "Source", "Front")}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}{TREE_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        '<div class="table-wrap"><table class="leaderboard" id="leaderboard"><thead><tr>',
        "".join(f"<th>{escape(c)}</th>" for c in columns),
        "</tr></thead><tbody>",
    ]
    for row, cells in zip(board.rows, display_rows(board)):
        css = ' class="baseline"' if row.is_baseline else ""
        tds = []
        for i, cell in enumerate(cells):
            cls = "num" if i in numeric else ("source" if columns[i] == "Source" else "text")
            tds.append(f'<td class="{cls}">{escape(cell)}</td>')
        parts.append(f"<tr{css}>{''.join(tds)}</tr>")
    parts.append("</tbody></table></div>")
    parts.append(f'<p class="legend">{escape(LEGEND)}</p>')
    for name, caption, png in plots:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<h2>{escape(caption)}</h2><figure><img id="{escape(name.rsplit(".", 1)[0])}" '
                     f'alt="{escape(caption)}" src="data:image/png;base64,{data}"></figure>')
    drilldown = trees_section(trees)
    if drilldown:
        parts.append(drilldown)
    parts.append("<h2>Warnings</h2>")
    if board.warnings:
        parts.append('<ul class="warnings">' + "".join(f"<li>{escape(w)}</li>" for w in board.warnings)
                     + "</ul>")
    else:
        parts.append("<p>None.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
