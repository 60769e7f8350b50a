"""The record riding lm-eval's slot strings: how a task's metrics see every sequence.

lm-eval gives `generate_until` exactly R request slots per doc (R = the task's `repeats`),
while EAGer ends each prompt with S_p sequences, S_p varying by prompt and up to 3M. lm-eval
0.4.13 has no channel from a model to a task's filters but the response strings themselves,
so each slot string is a `SlotText`: a `str` subclass (what lm-eval stores, caches and logs)
that carries its doc's `record.PromptRecord`. This leans on two details of lm-eval that are
not its public contract, kept here alone and checked by tests/test_lm_eval_slot_text.py:

- the strings `generate_until` returns reach a task's filters as the same objects (lm-eval
  appends them to `Instance.resps` and hands those lists to the filter), and `--use_cache`
  pickles them (its SqliteDict), so the record survives a cache hit;
- `--log_samples` writes `filtered_resps` through `sanitize_list`, which str()s what is not a
  list: `RecordJSON`, a dict whose str() is JSON, makes the samples file hold the record.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from eager_eval.pipeline.record import PromptRecord

NO_SEQUENCE = "[eager-eval: no sequence]"
"""The text of a request slot that no sequence fills (repeats R > S_p). Never scored."""


class SlotText(str):
    """A request slot's string that carries its doc's record (every slot of a doc, the same).

    It is a `str` wherever lm-eval looks (slots, caches, the samples' `resps`), and the
    `all_sequences` filter reads `record` off it. Pickled with its record, so lm-eval's
    `--use_cache` (a SqliteDict of pickles) hands back the whole record on a cache hit.
    """

    record: PromptRecord | None

    def __new__(cls, text: str, record: PromptRecord | None = None) -> "SlotText":
        obj = super().__new__(cls, text)
        obj.record = record
        return obj

    def __reduce__(self) -> tuple:
        return (SlotText, (str(self), self.record))


class RecordJSON(dict):
    """A doc's record as the filter hands it to `process_results`: a plain dict whose str() is
    JSON. lm-eval writes `filtered_resps` to the samples file through `sanitize_list`, which
    str()s everything that is not a list; this way the file holds the record as JSON."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)


def slot_record(slot_texts: Sequence[Any]) -> PromptRecord | None:
    return next((t.record for t in slot_texts if isinstance(t, SlotText) and t.record), None)


__all__ = ["NO_SEQUENCE", "SlotText", "RecordJSON", "slot_record"]
