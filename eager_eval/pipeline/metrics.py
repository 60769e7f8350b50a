"""Task metrics of METHOD.md section 5, stated once: every front end and the report call these.

Pass@k here is the paper's: a prompt counts when any of its S_p sequences is correct, whatever S_p
is (EAGer gives prompts different numbers of sequences). Because that number is not comparable
across harnesses, the unbiased estimator of Chen et al. (2021) is reported beside it for fixed k,
over the prompts with S_p >= k.

Beside Cons@k, the confidence-aware votes of DeepConf (docs/CONFIDENCE.md): the
confidence-weighted vote (Conf Cons@k) and the weighted votes of the top 10% and top 90% most
confident sequences (DeepConf-low and -high's filters). Every vote follows Cons@k's rule
(METHOD.md section 8): each voting sequence votes, an unextractable answer for "none", a tie to
the class seen first; a sequence stopped for confidence or consensus does not vote.

No torch, transformers, vLLM, lm_eval or inspect_ai here (see `answers`).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from eager_eval.pipeline.answers import AnswerType, extract_answer, gold_answer, matches, same_answer

if TYPE_CHECKING:
    from eager_eval.core.confidence import ConfidenceMeasure
    from eager_eval.core.results import PromptResult

__all__ = [
    "CONFIDENCE_VOTES",
    "AnswerClasses",
    "answer_classes",
    "vote",
    "confidence_votes",
    "consensus_share",
    "GradedTexts",
    "grade_texts",
    "vote_texts",
    "score_run",
    "unbiased_pass_at_k",
    "majority_vote",
    "PromptScore",
    "score_prompt",
    "PER_PROMPT_METRICS",
    "prompt_metrics",
    "TaskMetrics",
    "aggregate",
    "token_savings",
]


def unbiased_pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that k of n samples, drawn without replacement, hold a correct one.

    1 - C(n-c, k) / C(n, k): Chen et al. (2021), eq. 1. Exact integer binomials, then one
    division: no cancellation error for large n.
    """
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n], got k={k} with n={n} sequences")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n], got c={c} with n={n} sequences")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sequence
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_vote(
    answers: Sequence[str | None],
    same: Callable[[str, str], bool] = operator.eq,
) -> tuple[str | None, int]:
    """The Cons@k winner: (winning answer or None, index of its first vote); (None, -1) if empty.

    METHOD.md section 8: every sequence votes; an unextractable answer (None) votes for a "none"
    class of its own. Answers join the first class whose first member they are `same` as (the
    member plays gold, as math-verify is asymmetric). Most votes wins; a tie goes to the class
    seen first (lowest sequence index), as in the reference. "none" can win, and is never correct.
    """
    first = vote(answer_classes(answers, same), [1.0] * len(answers))
    return (None, -1) if first is None else (answers[first], first)


@dataclass(frozen=True)
class AnswerClasses:
    """A prompt's answers grouped once, so that every vote over them compares no answer twice."""

    of: tuple[int, ...]
    """The class of each sequence's answer (None answers: a "none" class of their own)."""
    is_none: tuple[bool, ...]
    """Per class: it is the "none" class (never correct)."""


def answer_classes(answers: Sequence[str | None],
                   same: Callable[[str, str], bool] = operator.eq) -> AnswerClasses:
    """Group answers as `majority_vote` does: each joins the first class whose first member it
    is `same` as (that member plays gold); None answers share one class."""
    representatives: list[str | None] = []
    of = []
    for answer in answers:
        for cls, representative in enumerate(representatives):
            if (answer is None and representative is None) or (
                answer is not None and representative is not None and same(answer, representative)
            ):
                of.append(cls)
                break
        else:
            of.append(len(representatives))
            representatives.append(answer)
    return AnswerClasses(tuple(of), tuple(r is None for r in representatives))


def vote(classes: AnswerClasses, weights: Sequence[float | None]) -> int | None:
    """The winning class's first voter (an index into the sequences), or None when none votes.

    `weights[i]`: sequence i's vote (1 for a plain majority, its confidence for a weighted
    vote), None when it does not vote. Most weight wins; among equal weights, the class whose
    first voter came first (METHOD.md section 8's tie rule). The "none" class can win."""
    totals: dict[int, float] = {}
    first: dict[int, int] = {}
    for index, (cls, weight) in enumerate(zip(classes.of, weights)):
        if weight is None:
            continue
        totals[cls] = totals.get(cls, 0.0) + weight
        first.setdefault(cls, index)
    if not totals:
        return None
    winner = max(totals, key=lambda cls: (totals[cls], -first[cls]))
    return first[winner]


def consensus_share(classes: AnswerClasses, weights: Sequence[float]) -> float:
    """DeepConf's consensus beta: the weight of the leading answer over the weight of all
    answers (the "none" class left out: a trace without an answer backs none); 0 when none."""
    totals: dict[int, float] = {}
    for cls, weight in zip(classes.of, weights):
        if not classes.is_none[cls]:
            totals[cls] = totals.get(cls, 0.0) + weight
    whole = sum(totals.values())
    return max(totals.values()) / whole if whole > 0 else 0.0


CONFIDENCE_VOTES = {"conf_cons_at_k": None, "top10_cons_at_k": 10.0, "top90_cons_at_k": 90.0}
"""The confidence-aware votes by metric name -> the share (%) of the most confident voters kept
(None: all of them): Conf Cons@k, and DeepConf-low's (top 10%) and -high's (top 90%) filters."""


def confidence_votes(classes: AnswerClasses, votes: Sequence[bool],
                     confidences: Sequence[float | None]) -> dict[str, int | None]:
    """Each of CONFIDENCE_VOTES' winners (the winning class's first voter), over the voting
    sequences (`votes`) weighted by their confidence. A top-eta% vote keeps the voters whose
    confidence reaches the (100 - eta)-th percentile of the voters' confidences (linear
    interpolation, as the reference's np.percentile): at least one, ties all kept."""
    from eager_eval.core.confidence import percentile

    weights = [c if v else None for v, c in zip(votes, confidences)]
    present = [w for w in weights if w is not None]
    out: dict[str, int | None] = {}
    for name, share in CONFIDENCE_VOTES.items():
        if share is None or not present:
            out[name] = vote(classes, weights)
            continue
        bar = percentile(present, 100.0 - share)
        out[name] = vote(classes, [w if w is not None and w >= bar else None for w in weights])
    return out


def confidence_correct(answers: Sequence[str | None], correct: Sequence[bool],
                       votes: Sequence[bool], confidences: Sequence[float | None],
                       answer_type: AnswerType | str) -> dict[str, bool]:
    """Whether each of CONFIDENCE_VOTES is correct for one prompt, from its graded answers;
    {} when some sequence has no confidence (it was not recorded) or there is none."""
    if not answers or any(c is None for c in confidences):
        return {}
    classes = answer_classes(answers, lambda a, b: same_answer(a, b, answer_type))
    winners = confidence_votes(classes, votes, confidences)
    return {name: index is not None and bool(correct[index]) for name, index in winners.items()}


@dataclass(frozen=True)
class PromptScore:
    """One prompt graded over all its sequences: what `aggregate` needs, nothing per-token."""

    n: int
    """S_p, the sequences this prompt ended with (branches and regenerations included)."""
    correct: int
    """How many of the n are correct: the c of pass@k and of the pass rate."""
    cons_correct: bool
    """Whether the majority-vote answer is correct (Cons@k for this prompt)."""
    tokens_generated: int
    """#T for this prompt: shared prefixes counted once, the cost EAGer saves."""
    tokens_in_outputs: int
    """Tokens summed over the n output texts (prefixes counted per sequence), for comparison."""
    answers: tuple[str | None, ...] = ()
    """Extracted answers in sequence order (None: unextractable), kept for the report."""
    cons_answer: str | None = None
    """The majority-vote answer (None: no sequences, or "none" won)."""
    conf_cons_correct: bool | None = None
    """The confidence-weighted vote is correct; None: no confidence recorded for this prompt."""
    top10_cons_correct: bool | None = None
    """The weighted vote of the top 10% most confident voters (DeepConf-low) is correct."""
    top90_cons_correct: bool | None = None
    """The weighted vote of the top 90% most confident voters (DeepConf-high) is correct."""

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")
        if not 0 <= self.correct <= self.n:
            raise ValueError(f"correct must be in [0, n={self.n}], got {self.correct}")
        if self.tokens_generated < 0 or self.tokens_in_outputs < 0:
            raise ValueError(
                "token counts must be >= 0, got "
                f"tokens_generated={self.tokens_generated}, "
                f"tokens_in_outputs={self.tokens_in_outputs}"
            )
        if self.answers and len(self.answers) != self.n:
            raise ValueError(f"answers must hold n={self.n} entries, got {len(self.answers)}")


@dataclass(frozen=True)
class GradedTexts:
    """One prompt's texts graded against its target: what a `record.PromptRecord` stores."""

    answers: tuple[str | None, ...]
    """Extracted answers, in text order (None: nothing to grade)."""
    correct: tuple[bool, ...]
    cons_index: int | None
    """The first text that voted for the majority answer (None: no texts)."""

    @property
    def cons_correct(self) -> bool:
        return self.cons_index is not None and self.correct[self.cons_index]


def vote_texts(texts: Sequence[str], answer_type: AnswerType | str, *,
               n_choices: int = 4,
               votes: Sequence[bool] | None = None) -> tuple[tuple[str | None, ...], int | None]:
    """(each text's answer, the first text that voted for the majority answer). `votes`: which
    texts vote (default all; a sequence stopped for confidence or consensus does not)."""
    answers = tuple(extract_answer(text, answer_type, n_choices=n_choices) for text in texts)
    weights = [1.0] * len(answers) if votes is None else [1.0 if v else None for v in votes]
    classes = answer_classes(answers, lambda a, b: same_answer(a, b, answer_type))
    return answers, vote(classes, weights)


def grade_texts(texts: Sequence[str], target: str, answer_type: AnswerType | str, *,
                n_choices: int = 4, votes: Sequence[bool] | None = None) -> GradedTexts:
    """Grade each text and the majority vote by one rule (`answers.gold_answer` and
    `answers.matches`), so "c > 0" and "the vote is correct" can never disagree."""
    answers, cons_index = vote_texts(texts, answer_type, n_choices=n_choices, votes=votes)
    gold = gold_answer(target, answer_type)
    return GradedTexts(answers, tuple(matches(a, gold, answer_type) for a in answers), cons_index)


def score_prompt(
    texts: Sequence[str],
    target: str,
    answer_type: AnswerType | str,
    *,
    tokens_generated: int,
    tokens_in_outputs: int,
    n_choices: int = 4,
    votes: Sequence[bool] | None = None,
    confidences: Sequence[float | None] | None = None,
) -> PromptScore:
    """Grade one prompt's sequences against its target (`grade_texts`) and count. `votes`:
    which sequences vote (default all); `confidences`: each one's confidence under the chosen
    measure, for the confidence-aware votes (None: not recorded)."""
    votes = [True] * len(texts) if votes is None else list(votes)
    graded = grade_texts(texts, target, answer_type, n_choices=n_choices, votes=votes)
    flags = (confidence_correct(graded.answers, graded.correct, votes, confidences, answer_type)
             if confidences is not None else {})
    return PromptScore(
        n=len(texts),
        correct=sum(graded.correct),
        cons_correct=graded.cons_correct,
        tokens_generated=tokens_generated,
        tokens_in_outputs=tokens_in_outputs,
        answers=graded.answers,
        cons_answer=None if graded.cons_index is None else graded.answers[graded.cons_index],
        conf_cons_correct=flags.get("conf_cons_at_k"),
        top10_cons_correct=flags.get("top10_cons_at_k"),
        top90_cons_correct=flags.get("top90_cons_at_k"),
    )


PER_PROMPT_METRICS = ("pass_at_k", "pass_at_1", "cons_at_k", "pass_rate", "tokens_generated",
                      "n_sequences", *CONFIDENCE_VOTES)
"""What the lm-eval tasks and the Inspect scorer report per prompt (their means, #T's sum, are
the task metrics)."""


def _as_float(flag: bool | None) -> float:
    """A per-prompt vote for a harness's mean: 1.0 / 0.0, NaN where it was not recorded (a
    model without confidence), so the mean says "not recorded" rather than a made-up number."""
    return math.nan if flag is None else float(flag)


def prompt_metrics(score: PromptScore) -> dict[str, float | int]:
    """One prompt's values of `PER_PROMPT_METRICS`: what each harness's task aggregates."""
    share = score.correct / score.n if score.n else 0.0
    return {
        "pass_at_k": float(score.correct > 0),
        "pass_at_1": share,  # unbiased pass@1 = c/n (Chen et al. 2021, k = 1)
        "cons_at_k": float(score.cons_correct),
        "pass_rate": share,
        "tokens_generated": score.tokens_generated,
        "n_sequences": score.n,
        "conf_cons_at_k": _as_float(score.conf_cons_correct),
        "top10_cons_at_k": _as_float(score.top10_cons_correct),
        "top90_cons_at_k": _as_float(score.top90_cons_correct),
    }


@dataclass(frozen=True)
class TaskMetrics:
    """One method on one task (METHOD.md section 5). Prompts with n = 0 count as wrong."""

    n_prompts: int
    """Prompts graded; every mean below is over these (the unbiased pass@k excepted)."""
    pass_at_k: float
    """The paper's Pass@k: share of prompts with >= 1 correct among their own S_p sequences.
    S_p varies by prompt and method, so this rewards spending sequences where they help."""
    pass_at_1: float
    """Mean over prompts of c/n: the unbiased pass@1, what a single sample scores on average.
    Equal to `pass_rate` by definition; kept under the name other harnesses use."""
    pass_at: dict[int, float]
    """Unbiased pass@k (Chen et al. 2021) per requested fixed k, over prompts with n >= k only,
    so numbers compare with other harnesses; NaN where no prompt qualifies."""
    pass_at_support: dict[int, int]
    """How many prompts each `pass_at[k]` averages over: a k most prompts cannot reach is weak."""
    cons_at_k: float
    """Share of prompts whose majority vote is correct: accuracy when one answer must be given."""
    pass_rate: float
    """The paper's PR: per-prompt fraction of correct sequences, averaged over prompts; shows
    whether extra sequences are good ones or noise that only Pass@k forgives."""
    tokens_generated: int
    """#T: tokens actually decoded, each shared prefix once; the cost that savings compare."""
    tokens_in_outputs: int
    """Tokens over all output texts (prefixes per sequence): what a non-branching run would pay
    to produce the same texts."""
    seqs_mean: float
    """#S: mean sequences per prompt; with min/max it shows where EAGer spent its budget."""
    seqs_min: int
    """Fewest sequences any prompt got."""
    seqs_max: int
    """Most sequences any prompt got (at most M, or the reallocation cap)."""
    conf_cons_at_k: float | None = None
    """Share of prompts whose confidence-weighted vote is correct (docs/CONFIDENCE.md); None
    when some prompt recorded no confidence."""
    top10_cons_at_k: float | None = None
    """The same for the weighted vote of the top 10% most confident voters (DeepConf-low)."""
    top90_cons_at_k: float | None = None
    """The same for the top 90% (DeepConf-high)."""

    def to_dict(self) -> dict:
        """Flat, JSON-ready: the fields above plus "pass@{k}" per fixed k (None: no support)."""
        flat: dict = {
            "n_prompts": self.n_prompts,
            "pass_at_k": self.pass_at_k,
            "pass_at_1": self.pass_at_1,
            "cons_at_k": self.cons_at_k,
            "pass_rate": self.pass_rate,
            "tokens_generated": self.tokens_generated,
            "tokens_in_outputs": self.tokens_in_outputs,
            "seqs_mean": self.seqs_mean,
            "seqs_min": self.seqs_min,
            "seqs_max": self.seqs_max,
            "conf_cons_at_k": self.conf_cons_at_k,
            "top10_cons_at_k": self.top10_cons_at_k,
            "top90_cons_at_k": self.top90_cons_at_k,
        }
        for k, value in sorted(self.pass_at.items()):
            flat[f"pass@{k}"] = None if math.isnan(value) else value
        return flat


def aggregate(scores: Sequence[PromptScore], ks: Sequence[int] = (1,)) -> TaskMetrics:
    """Task metrics over prompts' scores; `ks` are the fixed k of the unbiased pass@k."""
    if not scores:
        raise ValueError("aggregate needs at least one PromptScore, got none")
    for k in ks:
        if k < 1:
            raise ValueError(f"every k in ks must be >= 1, got {k}")
    n_prompts = len(scores)
    pass_rate = sum(s.correct / s.n for s in scores if s.n > 0) / n_prompts
    pass_at: dict[int, float] = {}
    pass_at_support: dict[int, int] = {}
    for k in sorted(set(ks)):
        eligible = [s for s in scores if s.n >= k]
        pass_at_support[k] = len(eligible)
        pass_at[k] = (
            sum(unbiased_pass_at_k(s.n, s.correct, k) for s in eligible) / len(eligible)
            if eligible
            else math.nan
        )
    seqs = [s.n for s in scores]
    return TaskMetrics(
        n_prompts=n_prompts,
        pass_at_k=sum(s.correct > 0 for s in scores) / n_prompts,
        pass_at_1=pass_rate,
        pass_at=pass_at,
        pass_at_support=pass_at_support,
        cons_at_k=sum(s.cons_correct for s in scores) / n_prompts,
        pass_rate=pass_rate,
        tokens_generated=sum(s.tokens_generated for s in scores),
        tokens_in_outputs=sum(s.tokens_in_outputs for s in scores),
        seqs_mean=sum(seqs) / n_prompts,
        seqs_min=min(seqs),
        seqs_max=max(seqs),
        conf_cons_at_k=_share(s.conf_cons_correct for s in scores),
        top10_cons_at_k=_share(s.top10_cons_correct for s in scores),
        top90_cons_at_k=_share(s.top90_cons_correct for s in scores),
    )


def _share(flags: Iterable[bool | None]) -> float | None:
    """Share of True; None when any prompt has no value (a mean over some prompts would not
    compare with Cons@k's over all)."""
    values = list(flags)
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def token_savings(method_tokens: int, baseline_tokens: int) -> float:
    """Savings vs Full Parallel: 1 - #T(method)/#T(baseline), on the same prompts."""
    if baseline_tokens <= 0:
        raise ValueError(f"baseline_tokens must be > 0, got {baseline_tokens}")
    if method_tokens < 0:
        raise ValueError(f"method_tokens must be >= 0, got {method_tokens}")
    return 1.0 - method_tokens / baseline_tokens


def score_run(
    prompts: Sequence["PromptResult"],
    targets: Sequence[str],
    answer_type: AnswerType | str,
    *,
    ks: Sequence[int] = (1,),
    n_choices: int = 4,
    measure: "ConfidenceMeasure | str | None" = None,
) -> tuple[list[PromptScore], TaskMetrics]:
    """Score every prompt of a run against its target, then aggregate. `measure`: the
    confidence the confidence-aware votes weigh by (default: the paper's, EagerConfig's)."""
    from eager_eval.core.config import EagerConfig

    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets: pass one target per prompt")
    measure = measure if measure is not None else EagerConfig.confidence_measure
    scores = [
        score_prompt(p.texts, target, answer_type, tokens_generated=p.tokens_generated,
                     tokens_in_outputs=p.tokens_in_outputs, n_choices=n_choices,
                     votes=[s.finish_reason.votes for s in p.sequences],
                     confidences=[None if s.confidence is None else s.confidence.of(measure)
                                  for s in p.sequences])
        for p, target in zip(prompts, targets)
    ]
    return scores, aggregate(scores, ks)
