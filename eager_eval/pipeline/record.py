"""The one per-prompt record every front end writes and every reader reads (docs/FORMAT.md).

A `PromptRecord` is everything one prompt of a run produced and what it was graded as: the
prompt (id, text, target, answer type), every sequence (tokens, text, answer, correct, finish
reason, parent, fork position, round, confidence), every fork (position, entropy, threshold, the two
tokens, round, the text around it), each round's tree (cap, theta, hit the cap), the budget
pool it was part of (its rounds and allotments), and the settings and versions that made it.

Written identically by

- the CLI: one record a line in `<method>.jsonl` (`outputs.py`);
- lm-eval: the `filtered_resps` of the tasks in `tasks/` (`frontends/lm_eval/tasks.py`);
- Inspect: each sample's `output.metadata` (`frontends/inspect/provider.py`);

and read back by `from_dict` (which also reads the per-front-end shapes written before this
record existed: version 1). `eager-eval report` and `eager-eval show` read only this.

Grades are stored once. `grade` fills each sequence's answer and correct flag and the record's
majority vote (`cons_index`) from the target, by `answers.gold_answer` / `answers.matches`;
every count (#correct, Pass@k, Cons@k) is derived from those flags (`score`), never graded again.
A record built without a target stays ungraded (`is_graded` false) until someone who has the
target grades it (lm-eval's `process_results`, Inspect's scorer) -- once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from eager_eval.core.confidence import ConfidenceMeasure, ConfidenceStats
from eager_eval.core.results import NOT_VOTING, json_ready

if TYPE_CHECKING:
    from eager_eval.pipeline.metrics import PromptScore
    from eager_eval.core.results import PromptResult, RunResult, SequenceResult

RECORD_FORMAT = "eager-eval/prompt"
RECORD_VERSION = 2
"""1: the three front ends' own shapes before this record (read by `from_dict`); 2: this."""

Decode = Callable[[Sequence[int]], str]
"""Token ids -> text (special tokens dropped): a tokenizer's decode."""

CONTEXT_BEFORE = 8
"""Tokens of shared prefix shown before a fork."""
CONTEXT_AFTER = 6
"""Tokens shown on each side from the fork position on."""

__all__ = [
    "RECORD_FORMAT", "RECORD_VERSION", "Decode", "SequenceRecord", "ForkRecord", "TreeRecord",
    "PoolRound", "PoolRecord", "PromptRecord", "build_record", "pool_of", "pool_rounds_of",
    "pool_from_dict",
    "is_record",
]


# ----------------------------------------------------------------------------------------------
# The record
# ----------------------------------------------------------------------------------------------


@dataclass
class SequenceRecord:
    index: int
    """Creation order within its round's tree (0 = the root)."""
    round: int
    """0 = EAGer-init / Full Parallel; r >= 1 = the r-th reallocation round."""
    parent: int | None
    """The sequence it forked from, in the same tree; None for a root."""
    fork_position: int
    """Tokens before this position are the parent's (0 for a root)."""
    text: str
    finish_reason: str | None = None
    """eos | stop | length (results.FinishReason); None where the writer did not know."""
    seed: int | None = None
    tokens: list[int] | None = None
    """Every token id of the sequence, the shared prefix included."""
    n_tokens: int | None = None
    """len(tokens); kept where the ids themselves were not written (older outputs)."""
    answer: str | None = None
    """The extracted answer (None: none found, or not graded)."""
    correct: bool | None = None
    """Graded once against the target; None: not graded (no target)."""
    confidence: ConfidenceStats | None = None
    """Its confidences {mean, tail, lowest_group, bottom_10} (docs/CONFIDENCE.md); None: not
    recorded (confidence_k=0, an older output, a model that is not EAGer)."""

    @property
    def votes(self) -> bool:
        """It votes in Cons@k and the confidence votes: not stopped for confidence or
        consensus (results.FinishReason.votes)."""
        return self.finish_reason not in NOT_VOTING

    @property
    def length(self) -> int | None:
        return len(self.tokens) if self.tokens is not None else self.n_tokens

    @property
    def tokens_generated(self) -> int | None:
        """Tokens this sequence decoded itself (a shared prefix counts once, at its owner)."""
        return None if self.length is None else self.length - self.fork_position


@dataclass
class ForkRecord:
    round: int
    position: int
    parent: int
    child: int
    entropy: float
    threshold: float | None = None
    parent_token: int | None = None
    child_token: int | None = None
    context: dict[str, str] | None = None
    """Text around the fork: `before` (shared), `parent` and `child` (each side's next tokens)."""


@dataclass
class TreeRecord:
    """One round's tree of the prompt."""

    round: int
    cap: int | None = None
    """M in round 0; the sequences a reallocation round allotted this prompt."""
    theta: float | None = None
    hit_cap: bool | None = None
    confidence_bar: float | None = None
    """The group confidence its sequences stopped below (deepconf, confidence_stop); None: none
    could stop."""
    margin: float | None = None
    """The closest an entropy test of the tree came to its threshold (nats; None: none was
    tested): a decision that close could flip where the numbers are not batch-invariant."""


@dataclass
class PoolRound:
    """One round of the budget pool the prompt was part of (Algorithm 2)."""

    round: int
    budget: int | None
    """Sequences unspent when the round started (M*N - sum S_p)."""
    sequences_spent: int | None
    tokens_generated: int | None = None
    allotments: dict[int, int] | None = None
    """Pool index -> sequences allotted (that prompt's cap in this round)."""


@dataclass
class PoolRecord:
    """The budget pool (one `run()`) the prompt was part of: the task, an lm-eval task group,
    an Inspect pool of samples x epochs."""

    n_prompts: int
    index: int
    """This prompt's index in the pool (the keys of `PoolRound.allotments`)."""
    budget: int
    """M * N of the pool (`config.total_budget`)."""
    n_sequences: int
    tokens_generated: int
    rounds: list[PoolRound] = field(default_factory=list)


@dataclass
class PromptRecord:
    id: str
    """The prompt's name in its source: the data's id, lm-eval's doc id, Inspect's sample id."""
    index: int
    """Its place in the run's task order (what `eager-eval show --prompt` takes)."""
    prompt: str | None
    """The prompt's text before any chat template (the problem and its instruction)."""
    target: str | None
    answer_type: str | None
    """math | choice (answers.AnswerType); None where unknown."""
    sequences: list[SequenceRecord]
    forks: list[ForkRecord] = field(default_factory=list)
    trees: list[TreeRecord] = field(default_factory=list)
    pool: PoolRecord | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    """EagerConfig.to_dict() of the run that made it (what actually ran: theta=auto's value,
    the request's sampling and length)."""
    versions: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    """theta=auto: how the run's theta was measured (calibration.Calibration.to_dict())."""
    cons_index: int | None = None
    """Position in `sequences` of the first vote for the majority answer (Cons@k's pick);
    set by `grade`."""
    origin: dict[str, Any] = field(default_factory=dict)
    """Where the front end placed it: lm-eval {task, doc_id, slots}, Inspect {sample, epoch}."""
    format: str = RECORD_FORMAT
    version: int = RECORD_VERSION

    # --- derived (never stored) -----------------------------------------------------------

    @property
    def n_sequences(self) -> int:
        return len(self.sequences)

    @property
    def tokens_generated(self) -> int | None:
        counts = [s.tokens_generated for s in self.sequences]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    @property
    def tokens_in_outputs(self) -> int | None:
        counts = [s.length for s in self.sequences]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.sequences]

    @property
    def is_graded(self) -> bool:
        return all(s.correct is not None for s in self.sequences)

    @property
    def n_correct(self) -> int | None:
        return sum(bool(s.correct) for s in self.sequences) if self.is_graded else None

    @property
    def cons_correct(self) -> bool | None:
        if not self.is_graded:
            return None
        return self.cons_index is not None and bool(self.sequences[self.cons_index].correct)

    @property
    def cons_text(self) -> str | None:
        """The majority-vote sequence's text (what a harness that reads one answer grades)."""
        return None if self.cons_index is None else self.sequences[self.cons_index].text

    # --- grading, once ----------------------------------------------------------------------

    def grade(self, target: str, answer_type: str, *, n_choices: int = 4) -> "PromptRecord":
        """Fill answers, correct flags and the majority vote from `target` (in place)."""
        from eager_eval.pipeline.metrics import grade_texts

        graded = grade_texts(self.texts, target, answer_type, n_choices=n_choices,
                             votes=[s.votes for s in self.sequences])
        for seq, answer, correct in zip(self.sequences, graded.answers, graded.correct):
            seq.answer, seq.correct = answer, correct
        self.target, self.answer_type = target, str(getattr(answer_type, "value", answer_type))
        self.cons_index = graded.cons_index
        return self

    def vote(self, answer_type: str) -> "PromptRecord":
        """Answers and the majority vote without a target (an ungraded record, e.g. for the
        one answer a stock lm-eval task reads); flags stay None."""
        from eager_eval.pipeline.metrics import vote_texts

        answers, self.cons_index = vote_texts(self.texts, answer_type,
                                              votes=[s.votes for s in self.sequences])
        for seq, answer in zip(self.sequences, answers):
            seq.answer = answer
        return self

    def score(self) -> "PromptScore":
        """The metrics' view of this prompt, from the stored flags (an ungraded record is an
        error: grade it first)."""
        from eager_eval.pipeline.metrics import PromptScore

        if not self.is_graded:
            raise ValueError(f"prompt {self.id!r} is not graded: call grade(target, type) first")
        votes = self.confidence_votes()
        return PromptScore(
            n=self.n_sequences, correct=self.n_correct or 0,
            cons_correct=bool(self.cons_correct), tokens_generated=self.tokens_generated or 0,
            tokens_in_outputs=self.tokens_in_outputs or 0,
            answers=tuple(s.answer for s in self.sequences),
            cons_answer=None if self.cons_index is None else self.sequences[self.cons_index].answer,
            conf_cons_correct=votes.get("conf_cons_at_k"),
            top10_cons_correct=votes.get("top10_cons_at_k"),
            top90_cons_correct=votes.get("top90_cons_at_k"))

    @property
    def confidence_measure(self) -> ConfidenceMeasure:
        """The measure its votes weigh by: the run's `confidence_measure` setting, else the
        default (an output written before the setting existed)."""
        try:
            return ConfidenceMeasure(str(self.settings.get("confidence_measure")))
        except ValueError:
            from eager_eval.core.config import EagerConfig

            return EagerConfig.confidence_measure

    def confidence_votes(self, measure: ConfidenceMeasure | str | None = None) -> dict[str, bool]:
        """Whether each confidence-aware vote (metrics.CONFIDENCE_VOTES) is correct, from the
        stored answers, grades and confidences under `measure` (default: the run's); {} when
        some sequence has no confidence or the record is not graded."""
        from eager_eval.pipeline.metrics import confidence_correct

        if not self.is_graded:
            return {}
        measure = ConfidenceMeasure(measure) if measure is not None else self.confidence_measure
        seqs = self.sequences
        return confidence_correct(
            [s.answer for s in seqs], [bool(s.correct) for s in seqs], [s.votes for s in seqs],
            [None if s.confidence is None else s.confidence.of(measure) for s in seqs],
            self.answer_type or "math")

    # --- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (inf as 'inf'), keys in the order docs/FORMAT.md lists them."""
        data = asdict(self)
        ordered = {"format": data.pop("format"), "version": data.pop("version")}
        ordered.update(data)
        return json_ready(ordered)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PromptRecord":
        """A record as any writer of this version or of version 1 left it; raises ValueError
        for what is not a record."""
        if data.get("format") == RECORD_FORMAT:
            return _from_v2(data)
        if isinstance(data.get("sequences"), list):
            return _from_v1(data)
        raise ValueError("not an eager-eval prompt record (no 'format' and no 'sequences')")


def is_record(data: Any) -> bool:
    return isinstance(data, Mapping) and data.get("format") == RECORD_FORMAT


# ----------------------------------------------------------------------------------------------
# Building from a run
# ----------------------------------------------------------------------------------------------


def fork_context(parent: "SequenceResult", child: "SequenceResult", position: int,
                 decode: Decode) -> dict[str, str]:
    """The text around a fork at `position`: the prefix's last tokens, then each side's next."""
    return {
        "before": decode(parent.tokens[max(0, position - CONTEXT_BEFORE):position]),
        "parent": decode(parent.tokens[position:position + CONTEXT_AFTER]),
        "child": decode(child.tokens[position:position + CONTEXT_AFTER]),
    }


def pool_of(run: "RunResult", index: int) -> PoolRecord:
    """The pool record of prompt `index` of `run`."""
    from eager_eval.core.config import total_budget

    return PoolRecord(
        n_prompts=len(run.prompts), index=index,
        budget=total_budget(run.settings["max_seqs"], len(run.prompts)),
        n_sequences=run.n_sequences, tokens_generated=run.tokens_generated,
        rounds=[PoolRound(r.round, r.budget, r.sequences_spent, r.tokens_generated,
                          dict(r.allotments)) for r in run.rounds])


def build_record(run: "RunResult", index: int, *, id: str, prompt: str | None,
                 target: str | None = None, answer_type: str | None = None,
                 decode: Decode | None = None, versions: Mapping[str, Any] | None = None,
                 origin: Mapping[str, Any] | None = None, n_choices: int = 4) -> PromptRecord:
    """The record of prompt `index` of `run`; graded when `target` and `answer_type` are given.

    `decode` (the tokenizer's) adds the text around each fork."""
    result: PromptResult = run.prompts[index]
    sequences, forks, trees = [], [], []
    for tree in result.trees:
        by_index = {s.index: s for s in tree.sequences}
        trees.append(TreeRecord(tree.round, tree.cap, tree.theta, tree.hit_cap,
                                tree.confidence_bar, tree.margin))
        sequences += [SequenceRecord(s.index, s.round, s.parent, s.fork_position, s.text,
                                     s.finish_reason.value, s.seed, list(s.tokens),
                                     confidence=s.confidence)
                      for s in tree.sequences]
        for e in tree.branch_events:
            context = (fork_context(by_index[e.parent], by_index[e.child], e.position, decode)
                       if decode is not None else None)
            forks.append(ForkRecord(tree.round, e.position, e.parent, e.child, e.entropy,
                                    e.threshold, e.parent_token, e.child_token, context))
    record = PromptRecord(
        id=str(id), index=index, prompt=prompt, target=None if target is None else str(target),
        answer_type=None if answer_type is None else str(getattr(answer_type, "value", answer_type)),
        sequences=sequences, forks=forks, trees=trees, pool=pool_of(run, index),
        settings=dict(run.settings), versions=dict(versions or {}), origin=dict(origin or {}))
    if target is not None and answer_type is not None:
        record.grade(str(target), record.answer_type, n_choices=n_choices)  # type: ignore[arg-type]
    return record


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    from eager_eval.common.settings import number_or_none

    number = number_or_none(value)
    return int(number) if number is not None else None


def _float(value: Any) -> float | None:
    from eager_eval.common.settings import number_or_none

    number = number_or_none(value)
    return float(number) if number is not None else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _sequence(d: Mapping[str, Any], index_key: str = "index") -> SequenceRecord:
    tokens = d.get("tokens")
    ids = [int(t) for t in tokens] if isinstance(tokens, list) else None
    n_tokens = _int(d.get("n_tokens", tokens if not isinstance(tokens, list) else None))
    return SequenceRecord(
        index=_int(d.get(index_key)) or 0, round=_int(d.get("round")) or 0,
        parent=_int(d.get("parent")), fork_position=_int(d.get("fork_position")) or 0,
        text=str(d.get("text") or ""), finish_reason=_str(d.get("finish_reason")),
        seed=_int(d.get("seed")), tokens=ids, n_tokens=None if ids is not None else n_tokens,
        answer=_str(d.get("answer")), correct=_bool(d.get("correct")),
        confidence=ConfidenceStats.from_dict(d.get("confidence")))


def _fork(d: Mapping[str, Any], round_idx: int) -> ForkRecord | None:
    position, parent, child = (_int(d.get(k)) for k in ("position", "parent", "child"))
    entropy = _float(d.get("entropy"))
    if position is None or parent is None or child is None or entropy is None:
        return None
    context = d.get("context")
    return ForkRecord(round_idx, position, parent, child, entropy, _float(d.get("threshold")),
                      _int(d.get("parent_token")), _int(d.get("child_token")),
                      dict(context) if isinstance(context, Mapping) else None)


def _forks(events: Any, sequences: Sequence[SequenceRecord]) -> list[ForkRecord]:
    forks = []
    for event in _dicts(events):
        round_idx = _int(event.get("round"))
        if round_idx is None:  # written before forks carried their round: the child says
            rounds = {s.round for s in sequences if s.index == _int(event.get("child"))
                      and s.parent == _int(event.get("parent"))
                      and s.fork_position == _int(event.get("position"))}
            round_idx = rounds.pop() if len(rounds) == 1 else 0
        fork = _fork(event, round_idx)
        if fork is not None:
            forks.append(fork)
    return forks


def _trees(records: Any) -> list[TreeRecord]:
    return [TreeRecord(_int(t.get("round")) or 0, _int(t.get("cap")), _float(t.get("theta")),
                       _bool(t.get("hit_cap")), _float(t.get("confidence_bar")),
                       _float(t.get("margin")))
            for t in _dicts(records) if _int(t.get("round")) is not None]


def pool_rounds_of(data: Any) -> list[PoolRound]:
    """The pool's rounds from JSON (a record's `pool.rounds`, results.json's `rounds`)."""
    rounds = []
    for r in _dicts(data):
        allotments = r.get("allotments")
        rounds.append(PoolRound(
            _int(r.get("round")) or 0, _int(r.get("budget")), _int(r.get("sequences_spent")),
            _int(r.get("tokens_generated")),
            {int(k): int(v) for k, v in allotments.items()} if isinstance(allotments, Mapping)
            else None))
    return rounds


def pool_from_dict(data: Any) -> PoolRecord | None:
    if not isinstance(data, Mapping):
        return None
    rounds = pool_rounds_of(data.get("rounds"))
    return PoolRecord(
        n_prompts=_int(data.get("n_prompts", data.get("prompts"))) or 0,
        index=_int(data.get("index")) or 0, budget=_int(data.get("budget")) or 0,
        n_sequences=_int(data.get("n_sequences")) or 0,
        tokens_generated=_int(data.get("tokens_generated")) or 0, rounds=rounds)


def _from_v2(data: Mapping[str, Any]) -> PromptRecord:
    if _int(data.get("version")) not in (RECORD_VERSION,):
        raise ValueError(f"prompt record version {data.get('version')!r}; this eager-eval "
                         f"reads {RECORD_VERSION} (and the older per-front-end shapes)")
    sequences = [_sequence(s) for s in _dicts(data.get("sequences"))]
    return PromptRecord(
        id=str(data.get("id")), index=_int(data.get("index")) or 0, prompt=_str(data.get("prompt")),
        target=_str(data.get("target")), answer_type=_str(data.get("answer_type")),
        sequences=sequences,
        forks=[f for f in (_fork(d, _int(d.get("round")) or 0) for d in _dicts(data.get("forks")))
               if f is not None],
        trees=_trees(data.get("trees")), pool=pool_from_dict(data.get("pool")),
        settings=dict(data.get("settings") or {}), versions=dict(data.get("versions") or {}),
        calibration=dict(data["calibration"]) if isinstance(data.get("calibration"), Mapping)
        else None,
        cons_index=_int(data.get("cons_index")), origin=dict(data.get("origin") or {}))


def _from_v1(data: Mapping[str, Any]) -> PromptRecord:
    """The shapes before this record: the CLI's `<method>.jsonl` line (`prompt_idx`, `problem`,
    `branch_events`, parallel `answers`/`correct` lists) and lm-eval's `filtered_resps` record
    (`doc_id`, `branch_points`, no token ids)."""
    sequences = [_sequence(s) for s in _dicts(data.get("sequences"))]
    answers, grades = data.get("answers"), data.get("correct")
    if isinstance(grades, list) and len(grades) == len(sequences):
        for seq, ok in zip(sequences, grades):
            seq.correct = bool(ok)
        if isinstance(answers, list) and len(answers) == len(sequences):
            for seq, answer in zip(sequences, answers):
                seq.answer = _str(answer)
    index = _int(data.get("prompt_idx", data.get("doc_id"))) or 0
    origin = {k: data[k] for k in ("task", "doc_id", "slots") if k in data}
    record = PromptRecord(
        id=str(data.get("id", index)), index=index, prompt=_str(data.get("problem")),
        target=_str(data.get("target")), answer_type=None, sequences=sequences,
        forks=_forks(data.get("branch_events", data.get("branch_points")), sequences),
        trees=_trees(data.get("trees")), origin=origin, version=1)
    cons = data.get("cons_correct")
    if record.is_graded and isinstance(cons, bool):  # the vote itself was not kept: its grade
        record.cons_index = next((i for i, s in enumerate(sequences) if bool(s.correct) == cons),
                                 None)
    return record
