"""`eager-eval report`: a leaderboard over eager-eval, lm-eval and Inspect results.

Importing this package is cheap (argparse only): `add_report_parser` is what the CLI calls at
start-up; readers, matplotlib and inspect_ai load when a report is actually built.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK = 0
EXIT_NOTHING_READABLE = 2
"""Exit code when no input held a readable run (nothing was written)."""


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The `report` options, for a CLI that builds its own subparser (see add_report_parser)."""
    parser.description = (
        "Read eager-eval run directories, lm-eval results JSON (results_*.json, with "
        "samples_*.jsonl beside them) and Inspect logs (.json, .eval); directories are searched "
        "recursively. Write leaderboard.md, leaderboard.csv, leaderboard.html (self-contained) "
        "and PNG plots into --output. Unreadable inputs are warned about and skipped. Exit code "
        "0 if any run was reported, 2 if none was readable."
    )
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="result file or directory (searched recursively)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR",
                        help="directory for the report (created if missing)")
    parser.add_argument("--title", default="EAGer leaderboard", help="page and Markdown title")
    parser.add_argument("--no-plots", action="store_true", help="tables only (faster)")


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `report` subcommand to an argparse subparsers object (func = handler =
    report_command, returning the exit code)."""
    parser = subparsers.add_parser(
        "report",
        help="leaderboard (Markdown, CSV, HTML) and plots from eager-eval, lm-eval and Inspect results",
    )
    add_report_arguments(parser)
    parser.set_defaults(func=report_command, handler=report_command)
    return parser


def report_command(args: argparse.Namespace) -> int:
    from eager_eval.common.files import check_output_dir
    from eager_eval.report.build import build_report

    check_output_dir(args.output)  # a file named as --output fails before any run is read
    report = build_report(args.runs, args.output, title=args.title, plots=not args.no_plots,
                          warn=sys.stderr)
    if not report.has_rows:
        print("eager-eval: error: no readable runs in " + ", ".join(map(str, args.runs))
              + " (see the warnings above); nothing written", file=sys.stderr)
        return EXIT_NOTHING_READABLE
    n_warn = len(report.warnings)
    print(f"report: {len(report.board.rows)} rows -> " + ", ".join(str(p) for p in report.files)
          + (f" ({n_warn} warning{'s' if n_warn != 1 else ''}, listed at the bottom)" if n_warn else ""))
    return EXIT_OK


def build_report(*args: Any, **kwargs: Any):  # noqa: ANN201 (lazy re-export)
    """See `eager_eval.report.build.build_report`."""
    from eager_eval.report.build import build_report as _build

    return _build(*args, **kwargs)


__all__ = ["add_report_parser", "add_report_arguments", "report_command", "build_report", "EXIT_OK", "EXIT_NOTHING_READABLE"]
