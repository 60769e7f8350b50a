"""What the task YAMLs in `tasks/` call: datasets, the all-sequences filter, metrics.

lm-eval imports this module through `!function eager_eval.frontends.lm_eval.tasks.<name>`
while it builds a task, so it stays light: no torch, transformers or model code (the adapters in
`eager_eval.frontends.lm_eval.models` import it, never the other way round).

How a task's metrics see ALL of a prompt's sequences (docs/LM_EVAL.md, "Sequences and samples"):
lm-eval gives `generate_until` exactly R request slots per doc (R = the task's `repeats`), while
EAGer ends each prompt with S_p sequences, S_p varying by prompt and up to 3M. So each slot string
the adapter returns is a `SlotText`: a `str` (what lm-eval stores and caches) that carries its
doc's `record.PromptRecord` (docs/FORMAT.md). The task's filter `all_sequences` swaps each doc's
R slot strings for that record (as a `RecordJSON`); it is what `process_results` scores, from
the grades the adapter stored (graded once), and what `--log_samples` writes (`filtered_resps`).
Nothing is kept on the side: lm-eval's `--use_cache` stores the SlotText, record and all.
Under a model that is not EAGer (`--model hf`), the filter makes an ungraded record of the R
slot strings, which `process_results` grades.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from eager_eval.frontends.lm_eval.slot_text import NO_SEQUENCE, RecordJSON, SlotText, slot_record
from eager_eval.pipeline.answers import AnswerType
from eager_eval.pipeline.metrics import PER_PROMPT_METRICS, prompt_metrics
from eager_eval.pipeline.record import PromptRecord, SequenceRecord

EAGER_TARGET_FIELD = "eager_target"
"""Doc field holding the gold answer the adapter hands full EAGer (mode=eager)."""
EAGER_ANSWER_TYPE_FIELD = "eager_answer_type"
"""Doc field holding how that answer is compared: "math" or "choice" (answers.AnswerType)."""

METRICS = PER_PROMPT_METRICS
"""The metric names every task here reports (declared in each YAML's metric_list): Pass@k,
pass@1, Cons@k, PR, #T, #S and the confidence-aware votes (docs/CONFIDENCE.md)."""

log = logging.getLogger("lm_eval.eager_eval")  # a child of lm-eval's logger: shown by its CLI

__all__ = [
    "NO_SEQUENCE",
    "METRICS",
    "aime25_dataset",
    "gpqa_diamond_dataset",
    "eager_demo_dataset",
    "check_task_data",
    "all_sequences",
    "process_math",
    "process_choice",
    "total",
    "SlotText",
    "RecordJSON",
]

# ---------------------------------------------------------------------------------------------
# Datasets (`custom_dataset: !function ...`): lm-eval calls them with the task's metadata and
# the model args as keywords, which they do not need.
# ---------------------------------------------------------------------------------------------


def aime25_dataset(**_metadata: Any) -> Any:
    """AIME 2025 (30 problems) from `eager_eval.pipeline.datasets`: $EAGER_EVAL_DATA_DIR/aime25.jsonl."""
    from eager_eval.pipeline.datasets import load_aime25

    return _test_split([
        _math_row(p.id, p.problem, p.prompt, p.answer) for p in load_aime25()
    ])


def gpqa_diamond_dataset(**_metadata: Any) -> Any:
    """GPQA-Diamond (198), choices in the fixed shuffle of `eager_eval.pipeline.datasets`; letter answers."""
    from eager_eval.pipeline.datasets import load_gpqa_diamond

    return _test_split([
        {"id": q.id, "question": q.question, "choices": list(q.choices), "prompt": q.prompt,
         "answer": q.answer, EAGER_TARGET_FIELD: q.answer,
         EAGER_ANSWER_TYPE_FIELD: AnswerType.CHOICE.value}
        for q in load_gpqa_diamond()
    ])


def eager_demo_dataset(**_metadata: Any) -> Any:
    """The demo's arithmetic problems (`eager_eval.pipeline.demo_problems`, default count and seed)."""
    from eager_eval.pipeline.demo_problems import demo_problems

    return _test_split([_math_row(p.id, p.problem, p.problem, p.answer) for p in demo_problems()])


_DATA_LOADERS = {"aime25_dataset": "load_aime25", "gpqa_diamond_dataset": "load_gpqa_diamond"}
"""Our dataset functions that read files or the network -> the `eager_eval.pipeline.datasets` loader."""


def check_task_data(custom_datasets: Sequence[str]) -> None:
    """Read the data of every task whose `custom_dataset` is one of ours, so that a missing or
    malformed file (DataFileError) shows before a model loads: lm-eval 0.4.13 builds the model
    first and the tasks after. `custom_datasets`: the YAML values, ending in a function name."""
    import eager_eval.pipeline.datasets as data

    for value in dict.fromkeys(custom_datasets):
        module, _, function = str(value).rpartition(".")
        if module.endswith(__name__) and function in _DATA_LOADERS:
            getattr(data, _DATA_LOADERS[function])()


def _math_row(id_: str, problem: str, prompt: str, answer: str) -> dict[str, str]:
    return {"id": id_, "problem": problem, "prompt": prompt, "answer": answer,
            EAGER_TARGET_FIELD: answer, EAGER_ANSWER_TYPE_FIELD: AnswerType.MATH.value}


def _test_split(rows: list[dict[str, Any]]) -> Any:
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


# ---------------------------------------------------------------------------------------------
# The typed path from the adapter to the metrics
# ---------------------------------------------------------------------------------------------


def _record_of_slots(slot_texts: Sequence[Any], doc: Any) -> PromptRecord:
    """An ungraded record of a doc's plain slot strings (a model that is not EAGer): its
    texts, markers dropped; token counts unknown."""
    texts = [t for t in slot_texts if isinstance(t, str) and t != NO_SEQUENCE]
    fields = doc if isinstance(doc, Mapping) else {}
    return PromptRecord(id=str(fields.get("id", "")), index=0, prompt=None, target=None,
                        answer_type=None,
                        sequences=[SequenceRecord(i, 0, None, 0, text) for i, text in enumerate(texts)])


# ---------------------------------------------------------------------------------------------
# Filter, metrics, aggregation
# ---------------------------------------------------------------------------------------------


def all_sequences(resps: Sequence[Sequence[str]], docs: Sequence[Any]) -> list[RecordJSON]:
    """Filter (`function: custom, filter_fn: !function ...`): each doc's full record.

    Falls back to an ungraded record of the doc's own slot strings when no EAGer adapter
    generated it, e.g. `--model hf` with `repeats: 32` is a Full Parallel run of these tasks.
    """
    return [RecordJSON((slot_record(texts) or _record_of_slots(texts, doc)).to_dict())
            for texts, doc in zip(resps, docs, strict=True)]


def process_math(doc: Mapping[str, Any], results: Sequence[Any]) -> dict[str, float | int]:
    """Metrics of one AIME-style doc over all its sequences (math-verify equivalence)."""
    return _score(doc, results, AnswerType.MATH)


def process_choice(doc: Mapping[str, Any], results: Sequence[Any]) -> dict[str, float | int]:
    """Metrics of one multiple-choice doc over all its sequences (exact letter)."""
    return _score(doc, results, AnswerType.CHOICE)


def total(values: Sequence[float]) -> float:
    """Aggregation for tokens_generated: #T is a sum over prompts, not a mean."""
    return sum(values)


_warned_untimed = False


def _record(results: Sequence[Any]) -> tuple[PromptRecord, Any]:
    """The doc's record from what process_results gets: [RecordJSON] after `all_sequences`,
    else [str] / [list of str] (a task with take_first or no filter)."""
    first = results[0] if results else []
    if isinstance(first, Mapping):
        return PromptRecord.from_dict(first), first
    items = [first] if isinstance(first, str) else list(first)
    return slot_record(items) or _record_of_slots(items, None), None


def _score(doc: Mapping[str, Any], results: Sequence[Any],
           answer_type: AnswerType) -> dict[str, float | int]:
    """The doc's metrics, from the record's stored grades; a record nobody graded (a model
    that is not EAGer, or no label in the doc) is graded here, once, and the grades written
    into the record the samples file logs."""
    global _warned_untimed
    record, logged = _record(results)
    if not record.is_graded:
        record.grade(str(doc["answer"]), answer_type.value)
        if logged is not None:
            logged.update(record.to_dict())
    if record.tokens_generated is None and not _warned_untimed:
        _warned_untimed = True
        log.warning("eager-eval: tokens_generated is counted by the eager-hf/eager-vllm models "
                    "only; this model's outputs report 0")
    return prompt_metrics(record.score())
