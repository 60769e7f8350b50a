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
import datetime as _dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from eager_eval.common.errors import UserError, user_error_line
from eager_eval.common.files import output_path
from eager_eval.core.config import ConfigError
from eager_eval.frontends.cli.options import (  # noqa: F401 (also this module's API)
    DEMO_DEFAULTS,
    DEMO_LIMIT,
    DEMO_MODEL,
    DEMO_MODES,
    DEMO_THREADS,
    PROG,
    Parser,
    UsageError,
    add_config_arguments,
    add_demo_arguments,
    add_run_arguments,
    config_from_args,
    engine_options,
    parse_modes,
    prompt_settings,
)
from eager_eval.frontends.cli.session import EXIT_INTERRUPTED, Session, run_session
from eager_eval.pipeline.task_data import load_data_task, load_demo_task

EXIT_USAGE = 2


# --- registry ----------------------------------------------------------------------------------


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
    parser = Parser(prog=PROG, description="EAGer entropy-aware branching decoding: run and "
                     "compare methods (arXiv 2510.11170).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
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
    except UserError as err:
        print(user_error_line(err), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def results_table(entries: Sequence[dict[str, Any]], title: str | None = None):
    """The rich table of results.json "runs" entries (metric names as TaskMetrics.to_dict)."""
    from rich.table import Table

    resumed = any(e.get("resumed_trees") for e in entries)
    table = Table(title=title, caption="* resumed: wall time of the trees generated after the "
                  "resume only" if resumed else None)
    for name, justify in [("Method", "left"), ("Pass@k", "right"), ("Cons@k", "right"),
                          ("Conf Cons@k", "right"), ("Pass Rate", "right"), ("#T", "right"),
                          ("#S mean (min-max)", "right"), ("Savings vs FP", "right"),
                          ("Wall s", "right")]:
        table.add_column(name, justify=justify)
    for e in entries:
        m = e["metrics"]
        savings = e.get("savings_vs_full_parallel")
        conf = m.get("conf_cons_at_k")
        method = e["method"] + (" + conf. stop" if (e.get("settings") or {}).get("confidence_stop")
                                else "")
        table.add_row(
            method, f"{m['pass_at_k']:.3f}", f"{m['cons_at_k']:.3f}",
            "-" if conf is None else f"{conf:.3f}", f"{m['pass_rate']:.3f}",
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


@subcommand("demo", "offline demo: EAGer vs Full Parallel on the embedded SmolLM2-135M",
            add_demo_arguments)
def demo_command(args: argparse.Namespace) -> int:
    modes = parse_modes(args.modes)
    configs = [config_from_args(args, DEMO_DEFAULTS, mode=mode) for mode in modes]
    if args.resume and args.output is None:
        raise ConfigError("resume", True, "used with --output DIR (the run to continue)")
    argv = list(args.argv)
    if args.output is not None:
        output = output_path(args.output)
    else:  # named in argv too: results.json's command and the resume hint must point here
        output = Path("runs", f"demo-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
        argv += ["--output", str(output)]
    session = Session(args.model, load_demo_task(args.limit, args.problem_seed), configs, output,
                      args.resume, engine_options(args), prompt_settings(args), argv)
    from eager_eval.frontends.cli import demo_summary

    print("\n".join(demo_summary.settings_lines(session.model, len(session.task.problems),
                                                session.configs)), flush=True)
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


@subcommand("run", "run one method on a JSONL/CSV data file (resumable)", add_run_arguments)
def run_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # bad settings fail before any file or model is read
    task = load_data_task(args.data, args.answer_type, args.problem_field, args.answer_field,
                          args.limit)
    session = Session(args.model, task, [config], output_path(args.output), args.resume,
                      engine_options(args), prompt_settings(args), args.argv)
    return _finish(session, args.progress)


# --- report and sweep: their modules own the options and the work -----------------------------


def _register_report_and_sweep() -> None:
    """Both modules import only argparse/config at the top (cheap); the work loads lazily."""
    from eager_eval.report import add_report_arguments, report_command
    from eager_eval.frontends.cli.sweep import add_sweep_arguments, sweep_command

    subcommand("report", "leaderboard (Markdown, CSV, HTML) and plots from eager-eval, lm-eval "
               "and Inspect results", add_report_arguments)(report_command)
    subcommand("sweep", "run a grid of models x tasks x modes x theta x M (resumable), then "
               "report", add_sweep_arguments)(sweep_command)


_register_report_and_sweep()


def _register_show() -> None:
    from eager_eval.report.show import add_show_arguments, show_command

    subcommand("show", "draw one prompt's trees: forks, entropy vs threshold, answers, "
               "reallocation (any eager-eval, lm-eval or Inspect output)",
               add_show_arguments)(show_command)


_register_show()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
