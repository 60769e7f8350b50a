"""Inspect solver, scorer and metrics for EAGer's outputs: every choice is graded.

Inspect's built-in scorers read only `choices[0]`; EAGer returns S_p sequences per sample as
choices, and its metrics (METHOD.md section 5) are over all of them. So `eager_scorer` grades
every choice with `metrics.score_prompt` (the same rules as lm-eval and the report) and returns
a dict Score value; one metric per key reads it back, so the log's names are exactly
pass_at_k, pass_at_1, cons_at_k, pass_rate, tokens_generated, n_sequences and the
confidence-aware votes conf_cons_at_k, top10_cons_at_k and top90_cons_at_k (docs/CONFIDENCE.md;
NaN for a provider that records no confidence).

`eager_generate` is `generate()` that also hands the sample's target to the eager provider
(for full EAGer, mode=eager): Inspect gives a provider only messages and a GenerateConfig, so the
label travels in `GenerateConfig.extra_body` under `LABEL_KEY`. Other providers get a plain
generate(): they would forward extra_body to their API.

Works for any provider: without EAGer's metadata, #T falls back to usage.output_tokens.
"""

from __future__ import annotations

from typing import Any

from inspect_ai.model import get_model
from inspect_ai.scorer import (
    Metric,
    SampleScore,
    Score,
    Scorer,
    Target,
    metric,
    scorer,
)
from inspect_ai.solver import Generate, Solver, TaskState, solver

from eager_eval.pipeline.answers import AnswerType
from eager_eval.pipeline.datasets import DataFileError
from eager_eval.common.errors import PREFIX
from eager_eval.pipeline.metrics import PromptScore, prompt_metrics, score_prompt
from eager_eval.pipeline.record import PromptRecord, is_record

try:  # Inspect prints a PrerequisiteError's message alone, without a traceback
    from inspect_ai._util.error import PrerequisiteError
except ImportError:  # pragma: no cover (a private name of inspect_ai 0.3.285)
    PrerequisiteError = Exception  # type: ignore[misc,assignment]

__all__ = [
    "TaskDataError",
    "task_data",
    "task_samples",
    "TASK_INDEX",
    "eager_generate",
    "eager_scorer",
    "pass_at_k",
    "pass_at_1",
    "cons_at_k",
    "pass_rate",
    "tokens_generated",
    "n_sequences",
    "conf_cons_at_k",
    "top10_cons_at_k",
    "top90_cons_at_k",
]


class TaskDataError(DataFileError, PrerequisiteError):
    """A task's data file is missing or malformed. Still a DataFileError; as a
    PrerequisiteError, `inspect eval` prints its `message`, the same `eager-eval: error: ...`
    line as every other user error, and no traceback."""

    def __init__(self, message: str) -> None:
        DataFileError.__init__(self, message)
        self.message = f"{PREFIX}{message}"


def task_data(load: Any, *args: Any) -> Any:
    """`load(*args)` (a dataset loader of eager_eval.pipeline.datasets), its DataFileError as a
    TaskDataError: how the tasks in tasks/ read their data."""
    try:
        return load(*args)
    except DataFileError as err:
        raise TaskDataError(str(err)) from None


TASK_INDEX = "eager_index"
"""Sample metadata: the sample's place in the task's data. The tasks in tasks/ set it, so the
provider pools their calls in the order the CLI and lm-eval run the same prompts."""


def task_samples(items: Any, make: Any) -> list[Any]:
    """`make(item)` (a Sample) for each item, with its place in the task in its metadata."""
    samples = []
    for index, item in enumerate(items):
        sample = make(item)
        sample.metadata = {**(sample.metadata or {}), TASK_INDEX: index}
        samples.append(sample)
    return samples


@solver
def eager_generate(answer_type: AnswerType | str, n_choices: int = 4) -> Solver:
    """generate(), telling the eager provider the sample's target (full EAGer's labels, the
    record's grades) and its place in the task (`TASK_INDEX`, the pool's order)."""
    answer_type = AnswerType(answer_type)

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        from eager_eval.frontends.inspect.provider import EagerModelAPI, Label

        if not isinstance(get_model().api, EagerModelAPI):
            return await generate(state)
        index = (state.metadata or {}).get(TASK_INDEX)
        label = Label(state.target.text, answer_type, n_choices,
                      index=index if isinstance(index, int) else None,
                      sample_id=str(state.sample_id), epoch=state.epoch)
        return await generate(state, extra_body=label.to_extra_body())

    return solve


def _mean_of(key: str) -> Metric:
    def compute(scores: list[SampleScore]) -> float:
        values = [float(s.score.value[key]) for s in scores]  # type: ignore[index]
        return sum(values) / len(values) if values else 0.0

    return compute


@metric
def pass_at_k() -> Metric:
    """The paper's Pass@k: share of samples with at least one correct choice (any S_p)."""
    return _mean_of("pass_at_k")


@metric
def pass_at_1() -> Metric:
    """Mean over samples of c/n: the unbiased pass@1 (what one sampled choice scores)."""
    return _mean_of("pass_at_1")


@metric
def cons_at_k() -> Metric:
    """Share of samples whose majority-vote answer is correct (ties: first seen)."""
    return _mean_of("cons_at_k")


@metric
def pass_rate() -> Metric:
    """The paper's PR: per-sample fraction of correct choices, averaged (= pass_at_1)."""
    return _mean_of("pass_rate")


@metric
def tokens_generated() -> Metric:
    """#T: total tokens decoded over all samples, each shared prefix once (a sum, not a mean)."""

    def compute(scores: list[SampleScore]) -> float:
        return float(sum(s.score.value["tokens_generated"] for s in scores))  # type: ignore[index]

    return compute


@metric
def n_sequences() -> Metric:
    """#S: mean sequences (choices) per sample."""
    return _mean_of("n_sequences")


@metric
def conf_cons_at_k() -> Metric:
    """Share of samples whose confidence-weighted vote is correct (docs/CONFIDENCE.md); NaN when
    the provider recorded no confidence."""
    return _mean_of("conf_cons_at_k")


@metric
def top10_cons_at_k() -> Metric:
    """The weighted vote of the top 10% most confident choices (DeepConf-low's filter)."""
    return _mean_of("top10_cons_at_k")


@metric
def top90_cons_at_k() -> Metric:
    """The weighted vote of the top 90% most confident choices (DeepConf-high's filter)."""
    return _mean_of("top90_cons_at_k")


@scorer(metrics=[pass_at_k(), pass_at_1(), cons_at_k(), pass_rate(), tokens_generated(),
                 n_sequences(), conf_cons_at_k(), top10_cons_at_k(), top90_cons_at_k()])
def eager_scorer(answer_type: AnswerType | str, n_choices: int = 4) -> Scorer:
    """Grade every choice against the target (math-verify for math, exact letter for choices).

    Score.value is a dict with one entry per metric; Score.answer is the majority-vote answer;
    Score.metadata keeps each choice's extracted answer and the number correct.
    """
    answer_type = AnswerType(answer_type)

    async def score(state: TaskState, target: Target) -> Score:
        graded = _prompt_score(state, target, answer_type, n_choices)
        winner = graded.cons_answer
        return Score(
            value=prompt_metrics(graded),
            answer=winner,
            explanation=f"{graded.correct} of {graded.n} choices correct; majority answer {winner!r}",
            metadata={"answers": list(graded.answers), "correct": graded.correct,
                      "answer_type": answer_type.value, "n_choices": n_choices},
        )

    return score


def _prompt_score(state: TaskState, target: Target, answer_type: AnswerType,
                  n_choices: int) -> PromptScore:
    """The sample's score: from the grades the eager provider stored in its record (graded
    once, with the target the solver passed); for any other output, the choices graded here."""
    output = state.output
    metadata = output.metadata or {}
    if is_record(metadata):
        record = PromptRecord.from_dict(metadata)
        if not record.is_graded:
            record.grade(target.text, answer_type.value, n_choices=n_choices)
        return record.score()
    usage_tokens = output.usage.output_tokens if output.usage is not None else 0
    return score_prompt([choice.message.text for choice in output.choices], target.text,
                        answer_type, tokens_generated=usage_tokens,
                        tokens_in_outputs=usage_tokens, n_choices=n_choices)
