"""Each prompt's trees, read back from any front end's output: what `eager-eval show` and the
report's per-prompt drill-down draw.

Every output holds one `record.PromptRecord` per prompt (docs/FORMAT.md): the CLI's
`<method>.jsonl`, lm-eval's samples (`--log_samples`, the tasks in tasks/), Inspect's sample
metadata. `report.readers` reads them (older outputs too: what they lack is shown as unknown,
never made up); this module groups a record's sequences and forks into one tree per round and
words what the pool did. Grades are the record's own: graded once, where the run had the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from eager_eval.common.words import plural
from eager_eval.core.config import NON_BRANCHING, total_budget
from eager_eval.pipeline.record import ForkRecord, PoolRound, PromptRecord, SequenceRecord
from eager_eval.report.readers import UnreadableRun, read_file_runs, result_files
from eager_eval.report.runs import METHODS, Run, normalise_method

Fork = ForkRecord
Sequence = SequenceRecord


@dataclass
class Tree:
    """One round's tree of one prompt (round 0: EAGer-init or Full Parallel)."""

    round: int
    sequences: list[Sequence]
    forks: list[Fork]
    cap: int | None = None
    """M in round 0; the sequences a reallocation round allotted this prompt."""
    theta: float | None = None
    hit_cap: bool | None = None
    confidence_bar: float | None = None
    """The group confidence its sequences stopped below (deepconf, confidence_stop)."""

    @property
    def roots(self) -> list[Sequence]:
        """Sequences no recorded fork made (the root; every root in Full Parallel)."""
        indexes = {s.index for s in self.sequences}
        return [s for s in self.sequences if s.parent is None or s.parent not in indexes]

    def forks_from(self, seq: Sequence) -> list[tuple[Fork, Sequence | None]]:
        """The forks `seq` made, by position, each with the sequence it created."""
        by_index = {s.index: s for s in self.sequences}
        forks = sorted((f for f in self.forks if f.parent == seq.index), key=lambda f: f.position)
        return [(f, by_index.get(f.child)) for f in forks]


@dataclass
class PromptTrees:
    index: int
    """The prompt's place in the run (0-based): what `eager-eval show --prompt` takes."""
    label: str
    """How its source names it: the data's id, the lm-eval doc id, the Inspect sample/epoch."""
    record: PromptRecord
    trees: list[Tree]
    pool_index: int | None = None
    """Its index in the budget pool's allotments, where that is not `index` (Inspect)."""

    @property
    def problem(self) -> str | None:
        return self.record.prompt

    @property
    def target(self) -> str | None:
        return self.record.target

    @property
    def n_correct(self) -> int | None:
        return self.record.n_correct

    @property
    def pool_key(self) -> int:
        return self.index if self.pool_index is None else self.pool_index

    @property
    def sequences(self) -> list[Sequence]:
        return [s for t in self.trees for s in t.sequences]

    @property
    def forks(self) -> list[Fork]:
        return [f for t in self.trees for f in t.forks]

    @property
    def reallocated(self) -> int:
        """Sequences this prompt received in reallocation rounds (round >= 1)."""
        return sum(len(t.sequences) for t in self.trees if t.round > 0)


@dataclass
class RunTrees:
    source: Path
    harness: str
    model: str
    task: str
    method: str
    settings: dict[str, Any]
    prompts: list[PromptTrees]
    pool_rounds: list[PoolRound] = field(default_factory=list)
    pool_note: str | None = None
    """How the prompts were pooled, where it is not simply "one pool" (Inspect)."""

    @property
    def moved(self) -> int:
        """Sequences the reallocation rounds created: budget moved between prompts."""
        return sum(p.reallocated for p in self.prompts)

    @property
    def title(self) -> str:
        theta = self.settings.get("theta")
        parts = [self.model, self.task, self.method]
        if self.method != "full_parallel" and theta is not None:
            parts.append(f"θ={theta:g}" if isinstance(theta, (int, float)) else f"θ={theta}")
        if self.settings.get("max_seqs") is not None:
            parts.append(f"M={self.settings['max_seqs']}")
        return " · ".join(parts)


class NoTrees(ValueError):
    """The path holds no output with per-prompt trees; the message says why."""


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def load_runs(path: str | Path) -> list[RunTrees]:
    """Every run with per-prompt trees at `path` (a run directory, a results/log file, or a
    directory searched recursively), in method order. Raises NoTrees when there is none."""
    root = Path(path)
    if not root.exists():
        raise NoTrees(f"{path}: no such file or directory")
    files = [root] if root.is_file() else result_files(root)
    runs: list[RunTrees] = []
    problems: list[str] = []
    for file in files:
        try:
            runs += read_file(file)
        except UnreadableRun as err:
            problems.append(f"{file}: {err}")
    if not runs:
        why = "; ".join(problems) if problems else "no eager-eval, lm-eval or Inspect results"
        raise NoTrees(f"{path}: no per-prompt trees found ({why})")
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(runs, key=lambda r: (str(r.source), order.get(r.method, len(order))))


def read_file(path: Path) -> list[RunTrees]:
    """The runs of one result file (results.json, results_*.json, an Inspect log) that hold
    per-prompt records."""
    runs = [run_trees(run) for run in read_file_runs(path) if run.records]
    if not runs:
        raise UnreadableRun("no per-prompt records in it (lm-eval: run with --log_samples and a "
                            "task from tasks/; eager-eval: its <method>.jsonl files are missing)")
    return runs


def run_trees(run: Run) -> RunTrees:
    """A run's records as trees, with its pool's rounds and how it was pooled."""
    records = run.records or []
    prompts = [prompt_trees(number, record) for number, record in enumerate(records)]
    pools = {repr(r.pool.rounds) if r.pool else None for r in records}
    first = records[0].pool if records else None
    note = None
    if len(pools) > 1:
        note = (f"{len(pools)} pools; the rounds shown are the first prompt's pool "
                f"({plural(first.n_prompts, 'prompt') if first else '? prompts'})")
    rounds = first.rounds if first is not None else run.pool_rounds
    return RunTrees(run.source, run.harness, run.model, run.task, run.method, dict(run.settings),
                    prompts, list(rounds or []), note)


def prompt_trees(number: int, record: PromptRecord) -> PromptTrees:
    """One record as its rounds' trees."""
    by_round = {t.round: t for t in record.trees}
    rounds = sorted({s.round for s in record.sequences} | set(by_round))
    trees = []
    for r in rounds:
        info = by_round.get(r)
        trees.append(Tree(r, [s for s in record.sequences if s.round == r],
                          sorted((f for f in record.forks if f.round == r),
                                 key=lambda f: (f.position, f.child)),
                          cap=info.cap if info else None, theta=info.theta if info else None,
                          hit_cap=info.hit_cap if info else None,
                          confidence_bar=info.confidence_bar if info else None))
    pool_index = record.pool.index if record.pool is not None else None
    return PromptTrees(number, _label(record), record, trees,
                       None if pool_index == number else pool_index)


def _label(record: PromptRecord) -> str:
    """How the record's source names the prompt: the data's id, lm-eval's doc, Inspect's sample."""
    origin = record.origin
    if "doc_id" in origin:
        return f"doc {origin['doc_id']}" + (f" (id {record.id})" if record.id != str(
            origin["doc_id"]) else "")
    if origin.get("sample") is not None:
        epoch = origin.get("epoch")
        return f"sample {origin['sample']}" + (f", epoch {epoch}" if epoch and epoch > 1 else "")
    return record.id


# ----------------------------------------------------------------------------------------------
# Words shared by the terminal view, the HTML drill-down and the demo
# ----------------------------------------------------------------------------------------------


def describe_pool(run: RunTrees) -> list[str]:
    """The budget pool in sentences: what round 0 spent, what each later round moved where."""
    if run.method == "full_parallel":
        return ["Full Parallel: M independent sequences per prompt; no budget is moved."]
    m, n = run.settings.get("max_seqs"), len(run.prompts)
    initial = sum(len(t.sequences) for p in run.prompts for t in p.trees if t.round == 0)
    lines = []
    unspent = None
    if isinstance(m, (int, float)):
        budget = total_budget(int(m), n)
        unspent = budget - initial
        lines.append(f"Budget M·N = {int(m)}·{n} = {budget} sequences; EAGer-init used "
                     f"{initial}, leaving {unspent} unspent.")
    by_key = {p.pool_key: p for p in run.prompts}
    later = [r for r in run.pool_rounds if r.round > 0]
    for r in later:
        if r.allotments:
            where = ", ".join(f"#{by_key[k].index if k in by_key else k}: {v}"
                              for k, v in sorted(r.allotments.items()))
            lines.append(f"Round {r.round}: {sum(r.allotments.values())} of the {r.budget} "
                         f"unspent allotted to {plural(len(r.allotments), 'prompt')} ({where}); "
                         f"{plural(r.sequences_spent or 0, 'sequence')} created.")
        else:
            lines.append(f"Round {r.round}: {plural(r.sequences_spent or 0, 'sequence')} "
                         f"created from the {r.budget} unspent.")
    if run.moved:
        lines.append(f"In all, {plural(run.moved, 'sequence')} moved to the prompts that "
                     "needed them.")
    elif run.method in ("eager_adapt", "eager"):
        lines.append("No reallocation: " + _why_nothing_moved(run, unspent))
    if run.pool_note:
        lines.append(run.pool_note)
    return lines


def round_title(run: RunTrees, tree: Tree) -> list[str]:
    """'Round 1', 'reallocation', 'allotted 3', 'θ 2.6', 'confidence bar 11.2', 'hit the
    cap', '3 sequences, 2 forks'."""
    if run.method == "deepconf":
        what = "DeepConf warm-up" if tree.round == 0 else "DeepConf (stops below the bar)"
    else:
        what = ("Full Parallel" if run.method == "full_parallel" else
                "EAGer-init" if tree.round == 0 else "reallocation (the unspent budget)")
    parts = [f"Round {tree.round}", what]
    if tree.cap is not None:
        parts.append(f"cap {tree.cap}" if tree.round == 0 else f"allotted {tree.cap}")
    if tree.theta is not None and run.method not in NON_BRANCHING:
        parts.append(f"θ {tree.theta:g}")
    if tree.confidence_bar is not None:
        parts.append(f"confidence bar {tree.confidence_bar:.3f}")
    if tree.hit_cap:
        parts.append("hit the cap")
    parts.append(f"{plural(len(tree.sequences), 'sequence')}, {plural(len(tree.forks), 'fork')}")
    return parts


def _why_nothing_moved(run: RunTrees, unspent: int | None) -> str:
    """The reason a pool moved no budget, read from what its trees recorded."""
    if unspent is not None and unspent <= 0:
        return ("EAGer-init spent the whole budget M·N (every prompt reached M), so nothing was "
                "left to move.")
    first = [t for p in run.prompts for t in p.trees if t.round == 0]
    if run.method == "eager_adapt":
        if not any(t.hit_cap for t in first):
            return ("no prompt hit the cap M, so none qualified for the unspent budget "
                    "(EAGer-adapt gives it to prompts that hit M).")
        return ("prompts hit the cap M but no reallocation round ran (max_rounds, or every "
                "such prompt already holds adapt_cap·M sequences).")
    if all(any(s.correct for s in p.sequences) for p in run.prompts):
        return "every prompt already had a correct sequence."
    return "no reallocation round ran (max_rounds)."


def one_line(text: str, limit: int) -> str:
    """`text` on one line (newlines as ⏎), cut to `limit` characters with an ellipsis."""
    flat = " ".join(str(text).replace("\n", " ⏎ ").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def majority_answers(prompt: PromptTrees, limit: int = 4) -> str:
    """'17×3, 15×2, none×1': the prompt's answers by votes, grouped by their exact text (Cons@k
    also joins answers math-verify finds equal: metrics.majority_vote)."""
    counts: dict[str, int] = {}
    for seq in prompt.sequences:
        key = "none" if seq.answer is None else str(seq.answer)
        counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{a}×{c}" for a, c in ranked[:limit])
    return text + (", …" if len(ranked) > limit else "")


def default_run(runs: list[RunTrees]) -> RunTrees:
    """The run whose trees show the most: EAGer-adapt, else full EAGer, EAGer-init, FP."""
    preference = ("eager_adapt", "eager", "eager_init", "full_parallel")
    return min(runs, key=lambda r: preference.index(r.method) if r.method in preference else 9)


def default_prompt(run: RunTrees) -> PromptTrees:
    """The prompt that got the most reallocated sequences, else the most sequences."""
    return max(run.prompts, key=lambda p: (p.reallocated, len(p.sequences), -p.index))


def runs_for(runs: Iterable[RunTrees], method: str | None) -> list[RunTrees]:
    """The runs of `method` (any spelling), or all runs when None."""
    if method is None:
        return list(runs)
    wanted = normalise_method(method)
    return [r for r in runs if r.method == wanted]


def confidence_note(seq: Sequence) -> str | None:
    """'conf 12.31 (lowest group 10.02)': a sequence's mean and lowest group confidence, or
    None where none was recorded."""
    c = seq.confidence
    if c is None:
        return None
    return f"conf {c.mean:.2f} (lowest group {c.lowest_group:.2f})"


__all__ = ["Fork", "Sequence", "Tree", "PromptTrees", "PoolRound", "RunTrees", "NoTrees",
           "load_runs", "read_file", "runs_for", "describe_pool", "majority_answers",
           "default_run", "default_prompt", "round_title", "confidence_note", "plural",
           "one_line"]
