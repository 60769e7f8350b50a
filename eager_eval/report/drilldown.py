"""The report's per-prompt drill-down: every run's trees as collapsible HTML, no script.

One `<details>` per run (its budget pool in sentences), inside it one `<details>` per prompt
(summary: sequences, forks, sequences received by reallocation, grades, answers by votes),
inside that one nested list per round: each sequence under the fork that made it, the fork's
position, entropy H against the threshold τ, and the text around it. The same reading
(`report.trees`) and words (`describe_pool`, `majority_answers`) as `eager-eval show`.
Plain HTML and CSS: the page stays one self-contained file.
"""

from __future__ import annotations

from html import escape
from typing import Iterable

from eager_eval.report.trees import (
    PromptTrees,
    confidence_note,
    RunTrees,
    Sequence,
    Tree,
    default_prompt,
    default_run,
    describe_pool,
    majority_answers,
    one_line,
    plural,
    round_title,
)

STYLE = """
details.run { margin: 0.6em 0; border: 1px solid #ccc; border-radius: 4px; padding: 4px 8px; }
details.run > summary { font-weight: 600; cursor: pointer; }
details.prompt { margin: 4px 0 4px 1em; }
details.prompt > summary { cursor: pointer; font-size: 13px; }
p.pool, p.problem { font-size: 12px; color: #444; max-width: 80em; }
div.round-title { font-size: 12px; font-weight: 600; color: #036; margin-top: 6px; }
ul.tree, ul.tree ul { list-style: none; margin: 0; padding-left: 1.4em;
                      border-left: 1px dotted #bbb; font-size: 12px; }
ul.tree { border-left: none; padding-left: 0.4em; }
span.right { color: #0a7d28; font-weight: 600; } span.wrong { color: #b00020; font-weight: 600; }
span.fork { color: #cc00cc; font-weight: 600; }
span.tail, span.meta { color: #777; }
span.ctx b.parent { color: #0a7d28; } span.ctx b.child { color: #b36b00; }
"""

TEXT_TAIL = 90


def trees_section(runs: Iterable[RunTrees], open_first: bool = True) -> str:
    """The drill-down's HTML (a heading, a legend, one collapsible block per run). The
    prompt `eager-eval show` would pick (EAGer-adapt's most reallocated) is open, so the page
    shows one tree at once."""
    runs = list(runs)
    if not runs:
        return ""
    parts = ['<h2 id="trees">Trees, prompt by prompt</h2>',
             '<p class="legend">Each run and prompt unfolds on a click. A sequence sits under the '
             'fork that made it: <span class="fork">fork @ token t · H &gt; τ</span> is the fork '
             'position, the top-K entropy there and the threshold it exceeded, then the text just '
             'before it and what each side continued with (<b>parent</b> keeps the most likely '
             'token, the child takes the second). ✓/✗ grade each sequence\'s answer against the '
             'target by the metrics\' rule; rounds ≥ 1 hold the sequences the unspent budget '
             'bought (Algorithm 2).</p>']
    shown = default_run(runs) if open_first else None
    for number, run in enumerate(runs):
        is_open = run is shown and run.method != "full_parallel"
        parts.append(_run_block(number, run, default_prompt(run) if is_open else None))
    return "\n".join(parts)


def _run_block(number: int, run: RunTrees, open_prompt: PromptTrees | None) -> str:
    attr = " open" if open_prompt is not None else ""
    summary = (f"{escape(run.title)} — {plural(len(run.prompts), 'prompt')}"
               + (f", {plural(run.moved, 'sequence')} reallocated" if run.moved else "")
               + f' <span class="meta">({escape(run.harness)}: {escape(str(run.source))})</span>')
    parts = [f'<details class="run" id="run-{number}"{attr}><summary>{summary}</summary>',
             f'<p class="pool">{"<br>".join(escape(line) for line in describe_pool(run))}</p>']
    for prompt in run.prompts:
        parts.append(_prompt_block(number, run, prompt, prompt is open_prompt))
    parts.append("</details>")
    return "\n".join(parts)


def _prompt_block(number: int, run: RunTrees, prompt: PromptTrees, is_open: bool) -> str:
    correct = prompt.n_correct
    grade = "" if correct is None else f" · {correct}/{len(prompt.sequences)} correct"
    realloc = f" · +{prompt.reallocated} reallocated" if prompt.reallocated else ""
    summary = (f"#{prompt.index} {escape(prompt.label)} · "
               f"{plural(len(prompt.sequences), 'sequence')} · "
               f"{plural(len(prompt.forks), 'fork')}{realloc}{grade} · answers "
               f"{escape(majority_answers(prompt))}")
    parts = [f'<details class="prompt" id="run-{number}-prompt-{prompt.index}"'
             f'{" open" if is_open else ""}><summary>{summary}</summary>']
    about = []
    if prompt.target is not None:
        about.append(f"<b>target</b> {escape(prompt.target)}")
    if prompt.problem:
        about.append(escape(one_line(prompt.problem, 600)))
    if about:
        parts.append(f'<p class="problem">{"<br>".join(about)}</p>')
    for tree in prompt.trees:
        parts.append(_tree_block(run, tree))
    parts.append("</details>")
    return "\n".join(parts)


def _tree_block(run: RunTrees, tree: Tree) -> str:
    def grow(seq: Sequence, depth: int = 0) -> str:
        items = []
        if depth <= 64:  # a malformed file must not recurse without end
            for fork, child in tree.forks_from(seq):
                inner = f"<ul>{grow(child, depth + 1)}</ul>" if child is not None else ""
                items.append(f"<li>{_fork_html(fork)}{inner}</li>")
        nested = f"<ul>{''.join(items)}</ul>" if items else ""
        return f"<li>{_sequence_html(seq)}{nested}</li>"

    return (f'<div class="round-title">{escape(" · ".join(round_title(run, tree)))}</div>'
            f'<ul class="tree">{"".join(grow(s) for s in tree.roots)}</ul>')


def _sequence_html(seq: Sequence) -> str:
    mark = {True: '<span class="right">✓</span> ', False: '<span class="wrong">✗</span> '}
    answer = "no answer" if seq.answer is None else f"answer {escape(str(seq.answer))}"
    meta = " · ".join(d for d in (seq.finish_reason,
                                  None if seq.length is None else f"{seq.length} tokens",
                                  confidence_note(seq)) if d)
    return (f"seq {seq.index} {mark.get(seq.correct, '')}{answer}"
            + (f' <span class="meta">· {escape(meta)}</span>' if meta else "")
            + f' <span class="tail">“…{escape(one_line(seq.text[-TEXT_TAIL:], TEXT_TAIL))}”</span>')


def _fork_html(fork) -> str:
    head = f"fork @ token {fork.position} · H {fork.entropy:.3f}"
    if fork.threshold is not None:
        head += f" &gt; τ {fork.threshold:.3f}"
    html = f'<span class="fork">{head}</span>'
    if fork.context:
        before = escape(one_line(fork.context.get("before", ""), 80))
        parent = escape(one_line(fork.context.get("parent", ""), 40))
        child = escape(one_line(fork.context.get("child", ""), 40))
        where = f"after “…{before}”" if before else "at the start"
        html += (f' <span class="ctx">{where}: <b class="parent">“{parent}”</b> '
                 f'(seq {fork.parent}) or <b class="child">“{child}”</b> (seq {fork.child})</span>')
    return html


__all__ = ["STYLE", "trees_section"]
