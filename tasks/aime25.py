"""AIME 2025 for Inspect AI, generated with EAGer and graded by math-verify over every sequence.

    inspect eval tasks/aime25.py --model eager/Qwen/Qwen3-4B -M max_seqs=32 --max-tokens 32768

30 problems; the prompt asks for the final answer in \\boxed{} (`MathProblem.prompt`, shared
with lm-eval and the CLI); each sample carries its place in the data, so the provider's pool
runs the problems in the order `eager-eval run` and `lm_eval` do: the same seeds, the same
trees (tests/test_frontends_agree.py). Data: `math-ai/aime25` from the Hub, or
`$EAGER_EVAL_DATA_DIR/aime25.jsonl` offline (fields id, problem, answer).

Metrics (over all choices of a sample): pass_at_k, pass_at_1, cons_at_k, pass_rate,
tokens_generated (#T) and n_sequences (#S). Answers are compared by math-verify equivalence.
See docs/INSPECT.md.
"""

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample

from eager_eval.pipeline.answers import AnswerType
from eager_eval.pipeline.datasets import load_aime25
from eager_eval.frontends.inspect.scorers import (
    eager_generate,
    eager_scorer,
    task_data,
    task_samples,
)


@task
def aime25() -> Task:
    samples = task_samples(task_data(load_aime25),
                           lambda p: Sample(id=p.id, input=p.prompt, target=p.answer))
    return Task(
        dataset=MemoryDataset(samples, name="aime25"),
        solver=eager_generate(AnswerType.MATH),
        scorer=eager_scorer(AnswerType.MATH),
    )
