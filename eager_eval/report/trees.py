"""Each prompt's trees, read back from any front end's output: what `eager-eval show` and the
report's per-prompt drill-down draw.

Sources (those `readers.py` reads for the leaderboard):

1. an eager-eval run directory: `results.json` and one `<method>.jsonl` per method;
2. an lm-eval `results_<date>.json` with `samples_<task>_<date>.jsonl` beside it
   (`--log_samples`; the tasks in tasks/ put every sequence in `filtered_resps`);
3. an Inspect log (`.eval` or `.json`; every sequence is a choice, the trees in its metadata).

The writers record the same things in all three (`eager_eval.tree_records`): every sequence
(round, index, parent, fork position, finish reason, tokens, text), every fork (round,
position, entropy, threshold, the text around it) and each round's tree (cap, theta, hit the
cap). Outputs written before the fork context or the per-tree records existed still read; what
they lack is shown as unknown, never made up.

Grades: an eager-eval run records each sequence's answer and grade. For lm-eval and Inspect
they are computed here from the texts and the target by the metrics' own rule
(`metrics.score_prompt`, `outputs.correct_flags`), so a check mark is what the metrics counted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from eager_eval.report.readers import (
    _LM_EVAL_DATE,
    UnreadableRun,
    _dedupe_docs,
    _json_kind,
    _load_json,
    _read_jsonl,
    parse_model_args,
)
from eager_eval.report.runs import METHODS, as_number, normalise_method, normalise_settings

_LETTER = re.compile(r"^\(?[A-Z]\)?$")


@dataclass
class Fork:
    """A granted fork: `parent` kept the most likely token at `position`, `child` the next."""

    round: int
    position: int
    parent: int
    child: int
    entropy: float
    threshold: float | None
    context: dict[str, str] | None = None
    """Text around the fork: `before` (shared), `parent` and `child` (each side's next tokens)."""


@dataclass
class Sequence:
    round: int
    index: int
    """Creation order within its round's tree (0 = the root)."""
    parent: int | None
    fork_position: int
    text: str
    n_tokens: int | None = None
    finish_reason: str | None = None
    answer: str | None = None
    correct: bool | None = None
    """None when no target was recorded."""


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
    problem: str | None
    target: str | None
    trees: list[Tree]
    pool_index: int | None = None
    """Its index in the budget pool's allotments, where that is not `index` (Inspect)."""

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
    def n_correct(self) -> int | None:
        grades = [s.correct for s in self.sequences]
        return None if any(g is None for g in grades) else sum(grades)

    @property
    def reallocated(self) -> int:
        """Sequences this prompt received in reallocation rounds (round >= 1)."""
        return sum(len(t.sequences) for t in self.trees if t.round > 0)


@dataclass
class PoolRound:
    """One round of the budget pool (the run's, or the Inspect pool's)."""

    round: int
    budget: int | None
    """Sequences unspent when the round started (M*N - sum S_p)."""
    sequences_spent: int | None
    allotments: dict[int, int] | None = None
    """Prompt index -> sequences allotted; None where the source did not record them."""


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
    files = [root] if root.is_file() else _result_files(root)
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


def _result_files(root: Path) -> list[Path]:
    if (root / "results.json").is_file():
        return [root / "results.json"]
    found = []
    for file in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in file.relative_to(root).parts):
            continue
        if file.name == "results.json" or file.suffix == ".eval" or (
                file.suffix == ".json" and (file.name.startswith("results_")
                                            or _json_kind(_safe_json(file)) == "inspect")):
            found.append(file)
    return found


def _safe_json(path: Path) -> Any:
    try:
        return _load_json(path)
    except UnreadableRun:
        return None


def read_file(path: Path) -> list[RunTrees]:
    """The runs of one result file (results.json, results_*.json, an Inspect log)."""
    if path.suffix == ".eval":
        return [_read_inspect(path)]
    data = _load_json(path)
    kind = _json_kind(data)
    if kind == "eager-eval":
        return _read_eager_eval(path, data)
    if kind == "lm-eval":
        return _read_lm_eval(path, data)
    if kind == "inspect":
        return [_read_inspect(path)]
    raise UnreadableRun("not an eager-eval, lm-eval or Inspect result file")


def _int(value: Any) -> int | None:
    number = as_number(value)
    return int(number) if number is not None else None


def _float(value: Any) -> float | None:
    number = as_number(value)
    return float(number) if number is not None else None


def _sequence(record: dict, *, index_key: str = "index") -> Sequence:
    return Sequence(
        round=_int(record.get("round")) or 0, index=_int(record.get(index_key)) or 0,
        parent=_int(record.get("parent")), fork_position=_int(record.get("fork_position")) or 0,
        text=str(record.get("text") or ""),
        n_tokens=_int(record.get("n_tokens", record.get("tokens"))),
        finish_reason=record.get("finish_reason"))


def _forks(events: Any, sequences: list[Sequence]) -> list[Fork]:
    forks = []
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict):
            continue
        position, parent, child = (_int(event.get(k)) for k in ("position", "parent", "child"))
        entropy = _float(event.get("entropy"))
        if None in (position, parent, child, entropy):
            continue
        round_idx = _int(event.get("round"))
        if round_idx is None:  # written before forks carried their round: the child says
            rounds = {s.round for s in sequences if s.index == child and s.parent == parent
                      and s.fork_position == position}
            round_idx = rounds.pop() if len(rounds) == 1 else 0
        context = event.get("context")
        forks.append(Fork(round_idx, position, parent, child, entropy,
                          _float(event.get("threshold")),
                          context if isinstance(context, dict) else None))
    return forks


def _trees(sequences: list[Sequence], forks: list[Fork], records: Any) -> list[Tree]:
    """Sequences and forks grouped by round, with each round's recorded cap/theta/hit_cap."""
    by_round: dict[int, dict] = {}
    for record in records if isinstance(records, list) else []:
        if isinstance(record, dict) and _int(record.get("round")) is not None:
            by_round[_int(record["round"])] = record
    rounds = sorted({s.round for s in sequences} | set(by_round))
    trees = []
    for r in rounds:
        info = by_round.get(r, {})
        hit = info.get("hit_cap")
        trees.append(Tree(r, [s for s in sequences if s.round == r],
                          sorted((f for f in forks if f.round == r), key=lambda f: (f.position, f.child)),
                          cap=_int(info.get("cap")), theta=_float(info.get("theta")),
                          hit_cap=hit if isinstance(hit, bool) else None))
    return trees


def _grade(sequences: list[Sequence], target: str | None, answer_type: str,
           answers: list | None = None, n_choices: int = 4) -> None:
    """Fill each sequence's answer and grade by the metrics' rule (in place)."""
    if target is None or not sequences:
        return
    from eager_eval.metrics import score_prompt
    from eager_eval.outputs import correct_flags

    if answers is None or len(answers) != len(sequences):
        score = score_prompt([s.text for s in sequences], target, answer_type,
                             tokens_generated=0, tokens_in_outputs=0, n_choices=n_choices)
        answers = list(score.answers)
    for seq, answer, ok in zip(sequences, answers, correct_flags(answers, target, answer_type)):
        seq.answer, seq.correct = answer, ok


def _answer_type(declared: Any, target: str | None) -> str:
    """The recorded answer type; else a lone letter target means a choice question."""
    if declared in ("math", "choice"):
        return declared
    return "choice" if target is not None and _LETTER.match(target.strip()) else "math"


def _pool_rounds(records: Any) -> list[PoolRound]:
    rounds = []
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, dict) or _int(record.get("round")) is None:
            continue
        allotments = record.get("allotments")
        rounds.append(PoolRound(
            _int(record["round"]), _int(record.get("budget")), _int(record.get("sequences_spent")),
            {int(k): int(v) for k, v in allotments.items()} if isinstance(allotments, dict) else None))
    return rounds


# --- 1. eager-eval ------------------------------------------------------------------------------
def _read_eager_eval(path: Path, data: dict) -> list[RunTrees]:
    runs = []
    for entry in data.get("runs") or []:
        if not isinstance(entry, dict) or not entry.get("samples"):
            continue
        samples = path.parent / str(entry["samples"])
        if not samples.is_file():
            continue
        prompts = []
        for number, record in enumerate(_read_jsonl(samples, [])):
            sequences = [_sequence(s) for s in record.get("sequences") or [] if isinstance(s, dict)]
            answers, grades = record.get("answers"), record.get("correct")
            if isinstance(answers, list) and isinstance(grades, list) and len(grades) == len(sequences):
                for seq, answer, ok in zip(sequences, answers, grades):
                    seq.answer, seq.correct = answer, bool(ok)
            forks = _forks(record.get("branch_events"), sequences)
            index = _int(record.get("prompt_idx"))
            index = number if index is None else index
            prompts.append(PromptTrees(
                index, str(record.get("id", index)), record.get("problem"),
                None if record.get("target") is None else str(record["target"]),
                _trees(sequences, forks, record.get("trees"))))
        settings = entry.get("settings") if isinstance(entry.get("settings"), dict) else {}
        runs.append(RunTrees(path, "eager-eval", str(data.get("model")), str(data.get("task")),
                             normalise_method(entry.get("method")),
                             normalise_settings(settings), prompts,
                             _pool_rounds(entry.get("rounds"))))
    if not runs:
        raise UnreadableRun("its runs' <method>.jsonl files are missing")
    return runs


# --- 2. lm-eval ---------------------------------------------------------------------------------
def _read_lm_eval(path: Path, data: dict) -> list[RunTrees]:
    date = _LM_EVAL_DATE.search(path.stem)
    if not date:
        raise UnreadableRun("an lm-eval results file without a date in its name")
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    eager = config.get("eager_eval") if isinstance(config.get("eager_eval"), dict) else {}
    model_args = parse_model_args(config.get("model_args"))
    settings = {**model_args, **(eager.get("settings") or {})}
    model = str(model_args.get("pretrained") or eager.get("model") or config.get("model"))
    runs = []
    for task in data.get("results") or {}:
        samples = path.parent / f"samples_{task}_{date.group(1)}.jsonl"
        if not samples.is_file():
            continue
        prompts = []
        for record in _dedupe_docs(_read_jsonl(samples, [])):
            prompt = _lm_eval_prompt(record)
            if prompt is not None:
                prompts.append(prompt)
        if not prompts:
            continue
        stats = (eager.get("tasks") or {}).get(task) or [{}]
        stats = stats[0] if isinstance(stats, list) and stats else {}
        calibrated = {"theta": stats["theta"]} if "theta" in stats else {}  # theta=auto's value
        run_settings = normalise_settings({**settings, **calibrated})
        runs.append(RunTrees(path, "lm-eval", model, str(task),
                             normalise_method(settings.get("mode", "full_parallel")), run_settings,
                             prompts, _pool_rounds(stats.get("rounds"))))
    if not runs:
        raise UnreadableRun("no samples_<task>_<date>.jsonl with every sequence beside it (run "
                            "lm_eval with --log_samples and a task from tasks/)")
    return runs


def _lm_eval_prompt(record: dict) -> PromptTrees | None:
    resps = record.get("filtered_resps")
    first = resps[0] if isinstance(resps, list) and resps else None
    if isinstance(first, str):
        try:
            first = json.loads(first)
        except json.JSONDecodeError:
            return None
    if not isinstance(first, dict) or not isinstance(first.get("sequences"), list):
        return None
    sequences = [_sequence(s) for s in first["sequences"] if isinstance(s, dict)]
    doc = record.get("doc") if isinstance(record.get("doc"), dict) else {}
    target = doc.get("answer", record.get("target"))
    target = None if target is None else str(target)
    _grade(sequences, target, _answer_type(doc.get("eager_answer_type"), target))
    index = _int(record.get("doc_id")) or 0
    forks = _forks(first.get("branch_points", first.get("branch_events")), sequences)
    return PromptTrees(index, f"doc {index}" + (f" (id {doc['id']})" if "id" in doc else ""),
                       doc.get("problem") or doc.get("question"), target,
                       _trees(sequences, forks, first.get("trees")))


# --- 3. Inspect ---------------------------------------------------------------------------------
def _read_inspect(path: Path) -> RunTrees:
    try:
        from inspect_ai.log import read_eval_log
    except ImportError:
        raise UnreadableRun("an Inspect log, but inspect_ai is not installed") from None
    try:
        log = read_eval_log(str(path))
    except Exception as err:  # noqa: BLE001 (zip, JSON and schema errors all mean unreadable)
        raise UnreadableRun(f"cannot read Inspect log ({type(err).__name__}: {err})") from None
    samples = [s for s in log.samples or [] if s.output is not None and s.output.choices]
    if not samples:
        raise UnreadableRun("Inspect log holds no samples with outputs")
    epochs = (log.eval.config.epochs if log.eval.config is not None else None) or 1
    prompts = [_inspect_prompt(i, s, epochs) for i, s in enumerate(samples)]
    metadata = samples[0].output.metadata or {}
    settings = metadata.get("settings") if isinstance(metadata.get("settings"), dict) else {}
    pool = metadata.get("pool") if isinstance(metadata.get("pool"), dict) else {}
    pools = {json.dumps((s.output.metadata or {}).get("pool", {}).get("rounds"), sort_keys=True)
             for s in samples}
    note = None
    if len(pools) > 1:
        note = (f"{len(pools)} pools; the rounds shown are the first sample's pool "
                f"({pool.get('prompts')} prompts)")
    provider, _, name = log.eval.model.partition("/")
    return RunTrees(path, "inspect", name if provider == "eager" and name else log.eval.model,
                    log.eval.task.rsplit("@", 1)[-1],
                    normalise_method(settings.get("mode", "eager_adapt")),
                    normalise_settings(settings), prompts, _pool_rounds(pool.get("rounds")), note)


def _inspect_prompt(number: int, sample: Any, epochs: int) -> PromptTrees:
    output = sample.output
    metadata = output.metadata or {}
    sequences = []
    for choice in output.choices:
        info = choice.message.metadata or {}
        sequences.append(_sequence({**info, "text": choice.message.text}, index_key="sequence"))
    target = sample.target if isinstance(sample.target, str) else ",".join(sample.target)
    score = next((s for s in (sample.scores or {}).values()
                  if isinstance(s.metadata, dict) and "answers" in s.metadata), None)
    declared = score.metadata if score is not None else {}
    _grade(sequences, target, _answer_type(declared.get("answer_type"), target),
           declared.get("answers"), int(declared.get("n_choices", 4)))
    problem = sample.input if isinstance(sample.input, str) else next(
        (m.text for m in reversed(sample.input) if m.role == "user"), None)
    label = f"sample {sample.id}" + (f", epoch {sample.epoch}" if epochs > 1 else "")
    pool = metadata.get("pool") if isinstance(metadata.get("pool"), dict) else {}
    forks = _forks(metadata.get("branch_events"), sequences)
    return PromptTrees(number, label, problem, target,
                       _trees(sequences, forks, metadata.get("rounds")), _int(pool.get("index")))


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
    if isinstance(m, (int, float)):
        budget = int(m) * n
        lines.append(f"Budget M·N = {int(m)}·{n} = {budget} sequences; EAGer-init used "
                     f"{initial}, leaving {budget - initial} unspent.")
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
    elif run.method == "eager_adapt":
        lines.append("No reallocation: no prompt hit the cap M, so none qualified for the "
                     "unspent budget (EAGer-adapt gives it to prompts that hit M).")
    elif run.method == "eager":
        lines.append("No reallocation: every prompt already had a correct sequence.")
    if run.pool_note:
        lines.append(run.pool_note)
    return lines


def round_title(run: RunTrees, tree: Tree) -> list[str]:
    """'Round 1', 'reallocation', 'allotted 3', 'θ 2.6', 'hit the cap', '3 sequences, 2 forks'."""
    what = ("Full Parallel" if run.method == "full_parallel" else
            "EAGer-init" if tree.round == 0 else "reallocation (the unspent budget)")
    parts = [f"Round {tree.round}", what]
    if tree.cap is not None:
        parts.append(f"cap {tree.cap}" if tree.round == 0 else f"allotted {tree.cap}")
    if tree.theta is not None and run.method != "full_parallel":
        parts.append(f"θ {tree.theta:g}")
    if tree.hit_cap:
        parts.append("hit the cap")
    parts.append(f"{plural(len(tree.sequences), 'sequence')}, {plural(len(tree.forks), 'fork')}")
    return parts


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def one_line(text: str, limit: int) -> str:
    """`text` on one line (newlines as ⏎), cut to `limit` characters with an ellipsis."""
    flat = " ".join(str(text).replace("\n", " ⏎ ").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def majority_answers(prompt: PromptTrees, limit: int = 4) -> str:
    """'17×3, 15×2, none×1': the prompt's answers by votes (as Cons@k counts them)."""
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


__all__ = ["Fork", "Sequence", "Tree", "PromptTrees", "PoolRound", "RunTrees", "NoTrees",
           "load_runs", "read_file", "runs_for", "describe_pool", "majority_answers",
           "default_run", "default_prompt", "round_title", "plural", "one_line"]
