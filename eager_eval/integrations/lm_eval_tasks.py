"""What the task YAMLs in `tasks/` call: datasets, the all-sequences filter, metrics.

lm-eval imports this module through `!function eager_eval.integrations.lm_eval_tasks.<name>`
while it builds a task, so it stays light: no torch, transformers or model code (the adapters in
`eager_eval.integrations.lm_eval` import it, never the other way round).

How a task's metrics see ALL of a prompt's sequences (docs/LM_EVAL.md, "Sequences and samples"):
lm-eval gives `generate_until` exactly R request slots per doc (R = the task's `repeats`), while
EAGer ends each prompt with S_p sequences, S_p varying by prompt and up to 3M. So the adapter keeps
each doc's whole result here (`remember`), keyed by the doc object lm-eval put in the request, and
the task's filter `all_sequences` swaps each doc's R slot strings for that record. The record is
what `process_results` scores and what `--log_samples` writes (`filtered_resps`): every sequence
with its round, parent, fork position, finish reason and token count, and the branch points.
Under a model that is not EAGer (`--model hf`), the filter falls back to the R slot strings.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping, Sequence

from eager_eval.answers import AnswerType
from eager_eval.metrics import score_prompt

NO_SEQUENCE = "[eager-eval: no sequence]"
"""The text of a request slot that no sequence fills (repeats R > S_p). Never scored."""

EAGER_TARGET_FIELD = "eager_target"
"""Doc field holding the gold answer the adapter hands full EAGer (mode=eager)."""
EAGER_ANSWER_TYPE_FIELD = "eager_answer_type"
"""Doc field holding how that answer is compared: "math" or "choice" (answers.AnswerType)."""

METRICS = ("pass_at_k", "pass_at_1", "cons_at_k", "pass_rate", "tokens_generated", "n_sequences")
"""The metric names every task here reports (declared in each YAML's metric_list)."""

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
    "remember",
    "recall",
    "forget_all",
    "record_of",
    "SequenceRecord",
]

# ---------------------------------------------------------------------------------------------
# Datasets (`custom_dataset: !function ...`): lm-eval calls them with the task's metadata and
# the model args as keywords, which they do not need.
# ---------------------------------------------------------------------------------------------


def aime25_dataset(**_metadata: Any) -> Any:
    """AIME 2025 (30 problems) from `eager_eval.datasets`: $EAGER_EVAL_DATA_DIR/aime25.jsonl."""
    from eager_eval.datasets import load_aime25

    return _test_split([
        _math_row(p.id, p.problem, p.prompt, p.answer) for p in load_aime25()
    ])


def gpqa_diamond_dataset(**_metadata: Any) -> Any:
    """GPQA-Diamond (198), choices in the fixed shuffle of `eager_eval.datasets`; letter answers."""
    from eager_eval.datasets import load_gpqa_diamond

    return _test_split([
        {"id": q.id, "question": q.question, "choices": list(q.choices), "prompt": q.prompt,
         "answer": q.answer, EAGER_TARGET_FIELD: q.answer,
         EAGER_ANSWER_TYPE_FIELD: AnswerType.CHOICE.value}
        for q in load_gpqa_diamond()
    ])


def eager_demo_dataset(**_metadata: Any) -> Any:
    """The demo's arithmetic problems (`eager_eval.demo_problems`, default count and seed)."""
    from eager_eval.demo_problems import demo_problems

    return _test_split([_math_row(p.id, p.problem, p.problem, p.answer) for p in demo_problems()])


_DATA_LOADERS = {"aime25_dataset": "load_aime25", "gpqa_diamond_dataset": "load_gpqa_diamond"}
"""Our dataset functions that read files or the network -> the `eager_eval.datasets` loader."""


def check_task_data(custom_datasets: Sequence[str]) -> None:
    """Read the data of every task whose `custom_dataset` is one of ours, so that a missing or
    malformed file (DataFileError) shows before a model loads: lm-eval 0.4.13 builds the model
    first and the tasks after. `custom_datasets`: the YAML values, ending in a function name."""
    import eager_eval.datasets as data

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
# The per-doc side channel between the adapter and the filter
# ---------------------------------------------------------------------------------------------


class SequenceRecord(dict):
    """A doc's record: a plain dict whose str() is JSON.

    lm-eval writes `filtered_resps` to the samples file through `sanitize_list`, which str()s
    everything that is not a list; this way the file holds parseable JSON, not a Python repr.
    """

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)


def record_of(result: Any, *, task: str | None, doc_id: int | None, slots: int,
              decode: Any = None) -> SequenceRecord:
    """A JSON-ready record of one prompt's `results.PromptResult`: what the samples log shows.

    Token ids are left out (texts, counts and branch points are what a reader checks); the
    branch points carry the round they belong to, as positions and sequence indexes are per
    tree, and, given the tokenizer's `decode`, the text around each fork (`tree_records`).
    """
    from eager_eval.tree_records import branch_event_records, tree_records

    sequences = [
        {"round": s.round, "index": s.index, "parent": s.parent, "fork_position": s.fork_position,
         "seed": s.seed, "finish_reason": s.finish_reason.value, "n_tokens": len(s.tokens),
         "tokens_generated": s.tokens_generated, "text": s.text}
        for s in result.sequences
    ]
    return SequenceRecord({
        "task": task,
        "doc_id": doc_id,
        "slots": slots,
        "n_sequences": result.n_sequences,
        "tokens_generated": result.tokens_generated,
        "tokens_in_outputs": result.tokens_in_outputs,
        "sequences": sequences,
        "branch_points": branch_event_records(result, decode),
        "trees": tree_records(result),
    })


_RECORDS: dict[int, tuple[Any, SequenceRecord]] = {}
"""id(doc) -> (doc, record). The doc itself is held so that its id cannot be reused by another
object while the entry exists. Cleared at the start of every adapter `generate_until`."""


def remember(doc: Any, record: SequenceRecord) -> None:
    """Keep a doc's full result for the filter (the adapter calls this after generating)."""
    _RECORDS[id(doc)] = (doc, record)


def recall(doc: Any) -> SequenceRecord | None:
    """The record kept for exactly this doc object, or None."""
    entry = _RECORDS.get(id(doc))
    return entry[1] if entry is not None and entry[0] is doc else None


def forget_all() -> None:
    _RECORDS.clear()


# ---------------------------------------------------------------------------------------------
# Filter, metrics, aggregation
# ---------------------------------------------------------------------------------------------


def all_sequences(resps: Sequence[Sequence[str]], docs: Sequence[Any]) -> list[SequenceRecord]:
    """Filter (`function: custom, filter_fn: !function ...`): each doc's full sequence record.

    Falls back to the doc's own slot strings (markers dropped) when no EAGer adapter generated
    it, e.g. `--model hf` with `repeats: 32` is a Full Parallel run of these tasks.
    """
    out = []
    for slot_texts, doc in zip(resps, docs, strict=True):
        record = recall(doc)
        if record is None:
            texts = [t for t in slot_texts if isinstance(t, str) and t != NO_SEQUENCE]
            record = SequenceRecord({"n_sequences": len(texts), "tokens_generated": None,
                                     "tokens_in_outputs": None,
                                     "sequences": [{"text": t} for t in texts]})
        out.append(record)
    return out


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


def _texts_and_tokens(results: Sequence[Any]) -> tuple[list[str], int | None, int | None]:
    """`results` as process_results gets it: [record] after `all_sequences`, or [str] / [list]
    when a task uses take_first or no filter. Marker strings are never texts."""
    first = results[0] if results else []
    if isinstance(first, dict):
        texts = [s["text"] for s in first.get("sequences", [])]
        return texts, first.get("tokens_generated"), first.get("tokens_in_outputs")
    items = [first] if isinstance(first, str) else list(first)
    return [t for t in items if isinstance(t, str) and t != NO_SEQUENCE], None, None


def _score(doc: Mapping[str, Any], results: Sequence[Any],
           answer_type: AnswerType) -> dict[str, float | int]:
    global _warned_untimed
    texts, tokens, tokens_in_outputs = _texts_and_tokens(results)
    if tokens is None and not _warned_untimed:
        _warned_untimed = True
        log.warning("eager-eval: tokens_generated is counted by the eager-hf/eager-vllm models "
                    "only; this model's outputs report 0")
    score = score_prompt(texts, str(doc["answer"]), answer_type, tokens_generated=tokens or 0,
                         tokens_in_outputs=tokens_in_outputs or 0)
    share = score.correct / score.n if score.n else 0.0
    return {
        "pass_at_k": float(score.correct > 0),
        "pass_at_1": share,  # unbiased pass@1 = c/n (Chen et al. 2021, k = 1)
        "cons_at_k": float(score.cons_correct),
        "pass_rate": share,
        "tokens_generated": score.tokens_generated,
        "n_sequences": score.n,
    }
