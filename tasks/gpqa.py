"""GPQA-Diamond for Inspect AI, generated with EAGer and graded over every sequence.

    inspect eval tasks/gpqa.py --model eager/Qwen/Qwen3-4B -M max_seqs=32 --max-tokens 32768

198 four-choice questions; each question's choices are shuffled once with a fixed seed
(`eager_eval.pipeline.datasets.load_gpqa_diamond`), so the prompts and choice order are the ones the
lm-eval tasks and the CLI see. The model answers with a boxed letter. Data: the public CSV
(https://openaipublic.blob.core.windows.net/simple-evals/gpqa_diamond.csv, downloaded once and
cached), or `$EAGER_EVAL_DATA_DIR/gpqa_diamond.csv` offline (columns Question, Correct Answer,
Incorrect Answer 1-3). GPQA content is never committed here. A missing file is one line on the
terminal, before the model loads.

Metrics (over all choices of a sample): pass_at_k, pass_at_1, cons_at_k, pass_rate,
tokens_generated (#T) and n_sequences (#S). Full EAGer (`-M mode=eager`) gets each sample's
target through `eager_generate()`. See docs/INSPECT.md.
"""

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample

from eager_eval.pipeline.answers import AnswerType
from eager_eval.pipeline.datasets import GPQA_SHUFFLE_SEED, LETTERS, load_gpqa_diamond
from eager_eval.frontends.inspect.scorers import (
    eager_generate,
    eager_scorer,
    task_data,
    task_samples,
)


@task
def gpqa_diamond(shuffle_seed: int = GPQA_SHUFFLE_SEED) -> Task:
    """`shuffle_seed`: base seed of the per-question choice shuffle (default: lm-eval's order)."""
    questions = task_data(load_gpqa_diamond, shuffle_seed)
    samples = task_samples(questions, lambda q: Sample(
        id=q.id, input=q.prompt, target=q.answer,
        metadata={"choices": list(q.choices), "question": q.question}))
    return Task(
        dataset=MemoryDataset(samples, name="gpqa_diamond"),
        solver=eager_generate(AnswerType.CHOICE, n_choices=len(LETTERS)),
        scorer=eager_scorer(AnswerType.CHOICE, n_choices=len(LETTERS)),
    )
