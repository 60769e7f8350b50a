"""`eager-eval show RUN [--method M] [--prompt I]`: one prompt's trees on the terminal.

RUN is what `eager-eval report` reads: an eager-eval run directory, an lm-eval results file (with
`--log_samples`) or an Inspect log, or a directory holding them. The view (rich):

- the run and its budget pool: what EAGer-init spent, which prompts later rounds gave how many
  sequences;
- a table of the prompts (sequences, forks, sequences received, correct, answers by votes);
- one prompt's trees, one per round: each sequence as a branch under the fork that made it, the
  fork's position, its entropy H against the threshold τ there, the text just before it and
  what each side continued with; each sequence's answer, grade, end and length.

Reading is `eager_eval.report.trees`; nothing here loads a model.
"""

from __future__ import annotations

import argparse
import os
import sys

from eager_eval.report.trees import confidence_note, one_line

EXIT_OK = 0
EXIT_USAGE = 2

TEXT_TAIL = 70
"""Characters of a sequence's end shown beside it (where its answer is)."""

LEGEND = (
    "H: top-K entropy (nats) at the fork; τ: the threshold there, max(θ, the prompt's earlier "
    "entropies' percentile). At a fork the parent keeps the most likely token and the child "
    "takes the second. ✓/✗: the sequence's answer graded against the target (the metrics' "
    "rule); rounds ≥ 1 are reallocations of the unspent budget (Algorithm 2).")


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Draw one prompt's trees: every sequence as a branch of the fork that made it, the "
        "entropy against the threshold at each fork with the text around it, each sequence's "
        "answer and grade, and the reallocation rounds. RUN: an eager-eval run directory, an "
        "lm-eval results_*.json (run with --log_samples), an Inspect log, or a directory "
        "holding one.")
    parser.add_argument("run", metavar="RUN", help="run directory or result file")
    parser.add_argument("--method", "-m", default=None, metavar="M",
                        help="full_parallel, eager_init, eager_adapt or eager (default: the "
                        "run's EAGer-adapt, else full EAGer, EAGer-init)")
    parser.add_argument("--prompt", "-p", type=int, default=None, metavar="I",
                        help="the prompt's index, the # column of the table (default: the "
                        "prompt that received the most reallocated sequences)")
    parser.add_argument("--task", default=None, help="the task, where RUN holds several")


def show_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from eager_eval.report.trees import NoTrees, default_prompt, default_run, load_runs, runs_for

    # A pipe gets 120 columns unless COLUMNS says otherwise (rich reads it when width is None).
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    console = Console(highlight=False, width=None if wide else 120)
    try:
        runs = load_runs(args.run)
    except NoTrees as err:
        print(f"eager-eval show: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.task is not None:
        runs = [r for r in runs if r.task == args.task]
    chosen = runs_for(runs, args.method)
    if not chosen:
        have = ", ".join(sorted({f"{r.task}/{r.method}" for r in runs})) or "none"
        print(f"eager-eval show: error: no run of method {args.method!r}"
              f"{'' if args.task is None else f' on task {args.task!r}'} in {args.run} "
              f"(there: {have})", file=sys.stderr)
        return EXIT_USAGE
    run = default_run(chosen)
    if args.prompt is None:
        prompt = default_prompt(run)
    else:
        by_index = {p.index: p for p in run.prompts}
        if args.prompt not in by_index:
            print(f"eager-eval show: error: --prompt {args.prompt} is not in this run (prompts "
                  f"{min(by_index)}..{max(by_index)})", file=sys.stderr)
            return EXIT_USAGE
        prompt = by_index[args.prompt]
    others = sorted({r.method for r in runs} - {run.method})
    for renderable in render(run, prompt, others, prompt_given=args.prompt is not None):
        console.print(renderable)
    return EXIT_OK


def render(run, prompt, other_methods=(), *, prompt_given: bool = True) -> list:
    """The renderables of the view, in order (also what the tests read)."""
    from rich.panel import Panel
    from rich.text import Text

    from eager_eval.report.trees import describe_pool

    out: list = [Text(f"{run.title}   ({run.source})", style="bold")]
    out.append(Text("\n".join(describe_pool(run))))
    if other_methods:
        out.append(Text(f"Other methods here: {', '.join(other_methods)} (--method M)", style="dim"))
    out.append(prompt_table(run, prompt))
    why = "" if prompt_given else (
        f" (the prompt with the most {'reallocated ' if prompt.reallocated else ''}sequences; "
        "--prompt I for another)")
    head = Text(f"Prompt #{prompt.index} · {prompt.label}{why}", style="bold")
    lines = [head]
    if prompt.target is not None:
        lines.append(Text(f"target: {prompt.target}"))
    if prompt.problem:
        lines.append(Text(one_line(prompt.problem, 300), style="italic"))
    out.append(Panel(Text("\n").join(lines), expand=False))
    for tree in prompt.trees:
        out.append(tree_view(run, tree))
    out.append(Text(LEGEND, style="dim"))
    return out


def prompt_table(run, selected):
    from rich.table import Table

    from eager_eval.report.trees import majority_answers

    table = Table(title=f"{len(run.prompts)} prompts", title_justify="left")
    for name, justify in [("#", "right"), ("prompt", "left"), ("S", "right"),
                          ("forks", "right"), ("+realloc", "right"), ("correct", "right"),
                          ("answers (votes)", "left")]:
        table.add_column(name, justify=justify)
    for p in run.prompts:
        correct = p.n_correct
        table.add_row(str(p.index), one_line(p.label, 30), str(len(p.sequences)),
                      str(len(p.forks)), str(p.reallocated) if p.reallocated else "",
                      "?" if correct is None else f"{correct}/{len(p.sequences)}",
                      one_line(majority_answers(p), 40),
                      style="bold" if p is selected else None)
    return table


def tree_view(run, tree):
    """One round's tree: sequences as branches, each fork a node between parent and child."""
    from rich.text import Text
    from rich.tree import Tree as RichTree

    from eager_eval.report.trees import round_title

    head, *rest = round_title(run, tree)
    title = Text(head, style="bold cyan")
    for part in rest:
        title.append(f" · {part}", style="yellow" if part == "hit the cap" else None)
    root = RichTree(title)

    def grow(node, seq, depth: int = 0) -> None:
        branch = node.add(sequence_label(seq))
        if depth > 64:  # a malformed file must not recurse without end
            return
        for fork, child in tree.forks_from(seq):
            fork_node = branch.add(fork_label(fork))
            if child is not None:
                grow(fork_node, child, depth + 1)

    for seq in tree.roots:
        grow(root, seq)
    return root


def sequence_label(seq):
    from rich.text import Text

    text = Text(f"seq {seq.index} ", style="bold")
    if seq.correct is True:
        text.append("✓ ", style="bold green")
    elif seq.correct is False:
        text.append("✗ ", style="bold red")
    text.append(f"answer {seq.answer}" if seq.answer is not None else "no answer",
                style="green" if seq.correct else ("red" if seq.correct is False else ""))
    details = [d for d in (seq.finish_reason,
                           None if seq.length is None else f"{seq.length} tokens",
                           confidence_note(seq)) if d]
    if details:
        text.append(" · " + " · ".join(details), style="dim")
    tail = one_line(seq.text[-TEXT_TAIL:], TEXT_TAIL)
    text.append(f"  “…{tail}”", style="dim italic")
    return text


def fork_label(fork):
    from rich.text import Text

    text = Text(f"fork @ token {fork.position}", style="magenta")
    text.append(f" · H {fork.entropy:.3f}")
    if fork.threshold is not None:
        text.append(f" > τ {fork.threshold:.3f}")
    if fork.context:
        before = one_line(fork.context.get("before", ""), 60)
        text.append(f"   after “…{before}”" if before else "   at the start", style=None)
        text.append(": ")
        text.append("“" + one_line(fork.context.get("parent", ""), 30) + "”", style="green")
        text.append(f" (seq {fork.parent}) or ")
        text.append("“" + one_line(fork.context.get("child", ""), 30) + "”", style="yellow")
        text.append(f" (seq {fork.child}):")
    else:
        text.append(f"  (no text recorded)  → seq {fork.child}", style="dim")
    return text


__all__ = ["add_show_arguments", "show_command", "render"]
