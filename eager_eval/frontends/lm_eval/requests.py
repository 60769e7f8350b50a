"""lm-eval's requests in EAGer terms: group them into pools, map generation kwargs, fill slots.

Pure functions of lm-eval's `Instance`s (no model): lm-eval hands `generate_until` every
generation request of a run in one list; a doc's request appears R times in a row (R = the
task's `repeats`; HARNESS.md).

1. `group_requests`: by task and generation kwargs (one budget pool each), then by doc, in
   the task's doc order;
2. `request_settings`: a group's generation kwargs onto the run's EagerConfig (stops, length,
   sampling; EAGer's own keys popped so no engine sees them);
3. `texts_for_slots`: a doc's R slot strings from its record (its sequences in creation order,
   or with R = 1, the Cons@k sequence).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from lm_eval.api.instance import Instance

from eager_eval.core.config import ConfigError, EagerConfig
from eager_eval.core.sampling import SamplingSettings, setting_fields
from eager_eval.common.settings import positive_int
from eager_eval.frontends.lm_eval.tasks import (
    EAGER_ANSWER_TYPE_FIELD,
    EAGER_TARGET_FIELD,
    NO_SEQUENCE,
)
from eager_eval.pipeline.answers import AnswerType
from eager_eval.pipeline.pool import Label
from eager_eval.pipeline.record import PromptRecord

log = logging.getLogger("lm_eval.eager_eval")
"""A child of lm-eval's logger, so its CLI prints these lines with its own."""

_LENGTH_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
"""lm-eval's aliases of the generation length, in its priority order (normalize_gen_kwargs)."""

DEFAULT_MAX_GEN_TOKS = 256
"""lm-eval's default generation length when neither the task nor the model args set one."""

SAMPLING_KWARGS = tuple(f.name for f in setting_fields(SamplingSettings)
                        if f.name not in ("temperature", "entropy_k", "entropy_source"))
"""Generation kwargs that are sampling settings of the same name (top_p, top_k, min_p, and any
SamplingSettings field added later); temperature is read with do_sample."""


@dataclass
class DocRequest:
    """One prompt: a doc's request and the positions (slots) it holds in the request list."""

    instance: Instance
    slots: list[int] = field(default_factory=list)
    """Ascending; R entries for a task with `repeats: R` (the same Instance R times)."""

    @property
    def context(self) -> str:
        return self.instance.args[0]

    @property
    def fields(self) -> Mapping[str, Any]:
        doc = self.instance.doc
        return doc if isinstance(doc, Mapping) else {}


@dataclass
class RequestGroup:
    """The requests one `run()` serves: one task, one set of generation kwargs."""

    task_name: str | None
    gen_kwargs: dict[str, Any]
    docs: list[DocRequest] = field(default_factory=list)
    """In the task's doc order (doc_id), so a pool's prompts are in the task's order."""


def _gen_kwargs_of(instance: Instance) -> dict[str, Any]:
    args = instance.args
    return dict(args[1]) if len(args) > 1 and args[1] else {}


def group_requests(requests: Sequence[Instance]) -> list[RequestGroup]:
    """Group by (task, generation kwargs), then by doc: `(task_name, doc_id, idx)`.

    Repeats arrive as the same Instance R times in a row, but only the key matters here, so
    copies or a shuffled list group the same way. A request without a doc id is its own doc.
    """
    groups: dict[tuple[Any, str], RequestGroup] = {}
    docs: dict[tuple[Any, ...], DocRequest] = {}
    for slot, instance in enumerate(requests):
        gen_kwargs = _gen_kwargs_of(instance)
        group_key = (instance.task_name, json.dumps(gen_kwargs, sort_keys=True, default=repr))
        group = groups.get(group_key)
        if group is None:
            group = groups[group_key] = RequestGroup(instance.task_name, gen_kwargs)
        doc_key = (
            (group_key, instance.doc_id, instance.idx)
            if instance.doc_id is not None else (group_key, "instance", id(instance))
        )
        doc = docs.get(doc_key)
        if doc is None:
            doc = docs[doc_key] = DocRequest(instance)
            group.docs.append(doc)
        doc.slots.append(slot)
    for group in groups.values():  # the task's order (lm-eval's is doc order; make it sure)
        group.docs.sort(key=lambda d: (d.instance.doc_id is None, d.instance.doc_id or 0))
    return list(groups.values())


@dataclass(frozen=True)
class RequestSettings:
    """A group's generation kwargs in EAGer terms."""

    config: EagerConfig
    """The run's settings: the model args with the request's sampling and length."""
    stop: tuple[str, ...]
    """`until`: never applied inside an open thinking block (the runner's rule)."""
    max_new_tokens: int
    answer_type: AnswerType | None
    """From `eager_answer_type`; else each doc's `eager_answer_type` field is read."""
    target_field: str | None
    """From `eager_target_field`: the doc field holding the gold answer (else `eager_target`)."""
    ignored: tuple[str, ...]
    """Generation kwargs the EAGer engines cannot honour (warned about, not applied)."""


def request_settings(
    gen_kwargs: Mapping[str, Any],
    config: EagerConfig,
    *,
    explicit: frozenset[str] = frozenset(),
    default_max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
) -> RequestSettings:
    """Map lm-eval generation kwargs onto the run's EagerConfig.

    - `until` -> stop strings; the first length alias present (`max_gen_toks` first) -> max new
      tokens, else the model arg `max_new_tokens` if given, else lm-eval's default (256).
    - `do_sample: false` -> temperature 0 (greedy; the tree still branches on entropy);
      `temperature`, `top_p`, `top_k` -> as given. A request that says nothing about sampling
      uses the model args (default 0.6, the paper's): M greedy copies would all be identical.
    - `eager_answer_type`, `eager_target_field` -> labels; popped here so no engine ever sees
      them. Anything else is ignored, and listed in `ignored`.
    """
    raw = dict(gen_kwargs)
    answer_type = raw.pop("eager_answer_type", None)
    target_field = raw.pop("eager_target_field", None)
    if answer_type is not None:
        try:
            answer_type = AnswerType(str(answer_type).strip().lower())
        except ValueError:
            options = ", ".join(t.value for t in AnswerType)
            raise ConfigError("eager_answer_type", answer_type, f"one of: {options}") from None
    until = raw.pop("until", None)
    if until is None:
        stop: tuple[str, ...] = ()
    elif isinstance(until, str):
        stop = (until,)
    elif isinstance(until, (list, tuple)):
        stop = tuple(str(s) for s in until)
    else:
        raise ConfigError("until", until, "a string or a list of strings")

    lengths = [v for v in (raw.pop(k, None) for k in _LENGTH_KEYS) if v is not None]
    if lengths:
        max_new_tokens = positive_int(lengths[0], "max_gen_toks")
    elif "max_new_tokens" in explicit:
        max_new_tokens = config.max_new_tokens
    else:
        max_new_tokens = default_max_gen_toks

    do_sample = raw.pop("do_sample", None)
    temperature = raw.pop("temperature", None)
    changes: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if do_sample is False or str(do_sample).lower() == "false":
        changes["temperature"] = 0.0
    elif temperature is not None:
        changes["temperature"] = temperature
    for key in SAMPLING_KWARGS:
        value = raw.pop(key, None)
        if value is not None:
            changes[key] = value
    run_config = EagerConfig.from_mapping({**config.to_dict(), **changes})  # checked once
    for key in ("temperature", *SAMPLING_KWARGS):
        if key in explicit and getattr(run_config, key) != getattr(config, key):
            log.warning("eager-eval: the request's %s=%s overrides the model arg %s=%s "
                        "(set it with --gen_kwargs instead)", key, getattr(run_config, key), key,
                        getattr(config, key))
    return RequestSettings(
        config=run_config, stop=stop, max_new_tokens=max_new_tokens, answer_type=answer_type,
        target_field=None if target_field is None else str(target_field),
        ignored=tuple(sorted(raw)),
    )


def texts_for_slots(record: PromptRecord, n_slots: int) -> list[str]:
    """A doc's strings for its `n_slots` request slots, in slot order.

    One slot (repeats: 1, every stock task): the Cons@k sequence, the one answer a harness that
    reads `results[0]` should grade. More slots: sequences in creation order (round, then index
    in the tree), then NO_SEQUENCE; sequences beyond the slots reach metrics through the filter.
    """
    texts = record.texts
    if n_slots == 1:
        return [record.cons_text if record.cons_text is not None else texts[0]]
    return texts[:n_slots] + [NO_SEQUENCE] * (n_slots - len(texts))



def doc_label(doc: DocRequest, settings: RequestSettings) -> tuple[Label | None, AnswerType | None]:
    """A doc's label (its gold answer, from the tasks in tasks/ or `eager_target_field`) and
    its answer type (None where the doc says none)."""
    target = doc.fields.get(settings.target_field or EAGER_TARGET_FIELD)
    answer_type = settings.answer_type or doc.fields.get(EAGER_ANSWER_TYPE_FIELD)
    kind = None if answer_type is None else AnswerType(answer_type)
    label = None if target is None or kind is None else Label(str(target), kind)
    return label, kind


__all__ = ["DEFAULT_MAX_GEN_TOKS", "DocRequest", "RequestGroup", "group_requests",
           "RequestSettings", "request_settings", "texts_for_slots", "doc_label"]
