"""lm-evaluation-harness models `eager-hf` and `eager-vllm`: EAGer behind lm-eval's `LM` API.

The models implement lm-eval's public contract (`lm_eval.api.model.LM`, the three methods of
`lm_eval/models/dummy.py`) by composition:

- `generate_until` runs EAGer on an engine from `engines.load_engine`, the loading path the CLI
  and the Inspect provider use (model names, GGUF conversion, devices, dtypes: one code path);
- `loglikelihood` and `loglikelihood_rolling` go to lm-eval's own HFLM, built around the
  already loaded weights and tokenizer the first time a task asks for them (`HFLM(pretrained=
  <the model object>, tokenizer=<the tokenizer>)`, HFLM's public constructor). eager-vllm's
  are scored by its own loaded engine (`lm_eval_vllm_scoring.VLLMScorer`, lm-eval's TemplateLM
  with vLLM prompt logprobs): a second engine would not fit beside it.

lm-eval hands `generate_until` every generation request of a run in one list; a doc's request
appears R times in a row (R = the task's `repeats`; HARNESS.md). `generate_texts`

1. groups the requests by task and generation kwargs, and each group by doc, in the task's doc
   order (`group_requests`);
2. builds each doc's prompt through the one prompt layer (`eager_eval.pipeline.prompts`) and calls
   `runner.run()` once per group, so the budget pool spans all of a task's prompts (METHOD.md
   section 4), in the order `eager-eval run` and the Inspect tasks run the same prompts;
3. makes each doc's `record.PromptRecord` (graded once, when the doc carries its label: the
   tasks in tasks/ do) and fills the doc's R slots with its sequences in creation order and
   `NO_SEQUENCE` where it has fewer than R; with R = 1 (stock tasks) the slot gets the Cons@k
   sequence (`texts_for_slots`). Every slot string is a `lm_eval_tasks.SlotText`, a `str`
   carrying its doc's record: the typed path by which the tasks' `all_sequences` filter hands
   every sequence to the metrics and to `--log_samples` (and which `--use_cache` keeps).

`generate_texts` is a pure function of the requests, a backend factory and a prompt encoder:
tests drive it with the ScriptedBackend. The model classes only load, hold statistics for
`get_model_info()` (results JSON, `config.eager_eval`) and delegate loglikelihood.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Mapping, Sequence

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from eager_eval.pipeline.answers import AnswerType, labels_verifier
from eager_eval.core.backend import Backend
from eager_eval.pipeline.calibration import AUTO, Calibration, calibrate_theta, split_auto_theta
from eager_eval.core.config import ConfigError, EagerConfig, Mode, total_budget
from eager_eval.engines.registry import Engine
from eager_eval.common.errors import log_user_errors
from eager_eval.frontends.lm_eval import tasks as lm_eval_tasks
from eager_eval.frontends.lm_eval.tasks import (
    EAGER_ANSWER_TYPE_FIELD,
    EAGER_TARGET_FIELD,
    NO_SEQUENCE,
    SlotText,
)
from eager_eval.pipeline.progress import RunProgress
from eager_eval.pipeline.prompts import ChatMode, Prompt, PromptEncoder, PromptSettings, room_warning
from eager_eval.pipeline.record import Decode, PromptRecord, build_record
from eager_eval.core.runner import TreeStore, run
from eager_eval.core.tree import PromptInput
from eager_eval.pipeline.tree_cache import cached_trees, check_trees_dir, pool_fingerprint
from eager_eval.common.settings import RENAMED, parse_key_values, parse_value, positive_int, split_settings

__all__ = [
    "EagerLM",
    "EagerHFLM",
    "EagerVLLM",
    "NO_SEQUENCE",
    "DocRequest",
    "RequestGroup",
    "RequestSettings",
    "GroupOutcome",
    "group_requests",
    "request_settings",
    "texts_for_slots",
    "generate_texts",
    "split_model_args",
]

log = logging.getLogger("lm_eval.eager_eval")
"""A child of lm-eval's logger, so its CLI prints these lines with its own."""

_LENGTH_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
"""lm-eval's aliases of the generation length, in its priority order (normalize_gen_kwargs)."""

DEFAULT_MAX_GEN_TOKS = 256
"""lm-eval's default generation length when neither the task nor the model args set one."""

StoreOpener = Callable[[str, EagerConfig, Sequence[PromptInput], Sequence[Any]],
                       ContextManager[TreeStore]]
"""(task name, run config, prompts, labels) -> the group's tree store, opened for its run."""

LM_EVAL_DEFAULT_DEVICE = "cuda:0"
"""What lm-eval 0.4.13's CLI passes as `device` when --device is absent (EvaluatorConfig)."""


# ---------------------------------------------------------------------------------------------
# Requests -> groups -> run() -> one string per request (pure: no model here)
# ---------------------------------------------------------------------------------------------


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
    for key in ("top_p", "top_k"):
        value = raw.pop(key, None)
        if value is not None:
            changes[key] = value
    run_config = EagerConfig.from_mapping({**config.to_dict(), **changes})  # checked once
    for key in ("temperature", "top_p", "top_k"):
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


@dataclass
class GroupOutcome:
    """One group's run: what statistics and the task metrics need."""

    group: RequestGroup
    settings: RequestSettings
    result: Any
    """The group's `results.RunResult`."""
    records: list[PromptRecord]
    """One per doc, in `group.docs` order."""
    prompt_lengths: list[int]
    """Each doc's prompt in tokens (the context room check)."""
    has_labels: bool
    calibration: Calibration | None = None
    """theta=auto: how this run's theta was measured (`result.settings` holds the value)."""


def _labels(group: RequestGroup,
            settings: RequestSettings) -> tuple[list[str | None], list[AnswerType | None]]:
    """Each doc's gold answer and answer type (None where it has none)."""
    targets: list[str | None] = []
    types: list[AnswerType | None] = []
    for doc in group.docs:
        target = doc.fields.get(settings.target_field or EAGER_TARGET_FIELD)
        targets.append(None if target is None else str(target))
        answer_type = settings.answer_type or doc.fields.get(EAGER_ANSWER_TYPE_FIELD)
        types.append(None if answer_type is None else AnswerType(answer_type))
    return targets, types


def _require_labels(group: RequestGroup, targets: Sequence[str | None],
                    types: Sequence[AnswerType | None]) -> None:
    missing = sum(t is None or a is None for t, a in zip(targets, types, strict=True))
    if missing:
        raise ConfigError(
            "mode", Mode.EAGER.value, "", message=(
                f"mode=eager (full EAGer) needs a gold answer and an answer type for every "
                f"prompt, but {missing} of {len(targets)} prompts of task "
                f"{group.task_name!r} have none. Use a task from tasks/ (aime25, gpqa_diamond, "
                f"eager_demo), or give generation kwargs eager_answer_type=math|choice and "
                f"eager_target_field=<doc field with the answer>; without labels use "
                f"mode=eager_adapt"))


def generate_texts(
    requests: Sequence[Instance],
    *,
    config: EagerConfig,
    new_backend: Callable[[EagerConfig], Backend],
    encoder: PromptEncoder,
    rendered: bool = False,
    explicit: frozenset[str] = frozenset(),
    default_max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
    finalize: Callable[[str], str] = lambda text: text,
    auto_theta: bool = False,
    decode: Decode | None = None,
    versions: Mapping[str, Any] | None = None,
    open_store: StoreOpener | None = None,
    progress: RunProgress | None = None,
) -> tuple[list[str], list[GroupOutcome]]:
    """Exactly one string (a `SlotText`) per request, in request order, plus each group's run.

    `encoder` builds the prompts (`rendered`: lm-eval already applied the chat template);
    `finalize` post-processes a sequence's text before it fills a slot (e.g. cut the thinking
    block off), never a marker. With `auto_theta`, each group's theta is calibrated on its own
    prompts first (theta=auto). `decode` adds the text around each fork to the records.
    `open_store(task, config, prompts)`: where a group's finished trees are kept as they end
    and read back from (`trees=DIR`, `eager_eval.pipeline.tree_cache`). `progress`: a bar per group
    (trees done, tokens/s), as the CLI draws them.
    """
    texts: list[str | None] = [None] * len(requests)
    outcomes: list[GroupOutcome] = []
    for group in group_requests(requests):
        settings = request_settings(group.gen_kwargs, config, explicit=explicit,
                                    default_max_gen_toks=default_max_gen_toks)
        run_config = settings.config
        targets, types = _labels(group, settings)
        verifier = None
        if run_config.mode is Mode.EAGER:
            _require_labels(group, targets, types)
            verifier = labels_verifier(targets, types)
        prompts = [encoder.encode(Prompt(doc.context, settings.stop, settings.max_new_tokens,
                                         rendered=rendered),
                                  name=f"doc {doc.instance.doc_id} of task {group.task_name}")
                   for doc in group.docs]
        calibration = None
        if auto_theta:  # a warm-up on this task's prompts (eager_eval.pipeline.calibration)
            calibration = calibrate_theta(new_backend, [p.tokens for p in prompts], run_config)
            run_config = run_config.replace(theta=calibration.theta)
        with (open_store(group.task_name, run_config, prompts, targets) if open_store is not None
              else contextlib.nullcontext()) as store:
            backend, on_tree_done = new_backend(run_config), None
            if progress is not None:
                bar = progress.method(group.task_name or "generate", len(prompts),
                                      stored=store if store is not None else ())
                backend, on_tree_done = bar.watch(backend), bar.tree_done
            result = run(prompts, backend, run_config, verifier=verifier, store=store,
                         on_tree_done=on_tree_done)
        records = []
        for i, (doc, target, answer_type) in enumerate(zip(group.docs, targets, types)):
            record = build_record(
                result, i, id=str(doc.fields.get("id", doc.instance.doc_id)), prompt=doc.context,
                target=target, answer_type=answer_type, decode=decode, versions=versions,
                origin={"task": group.task_name, "doc_id": doc.instance.doc_id,
                        "slots": len(doc.slots)})
            if calibration is not None:
                record.calibration = calibration.to_dict()
            if not record.is_graded:  # no label: still the majority vote for one-slot tasks
                record.vote((answer_type or AnswerType.MATH).value)
            records.append(record)
            filled = texts_for_slots(record, len(doc.slots))
            for slot, text in zip(doc.slots, filled, strict=True):
                texts[slot] = SlotText(text if text == NO_SEQUENCE else finalize(text), record)
        outcomes.append(GroupOutcome(group, settings, result, records,
                                     [len(p.tokens) for p in prompts],
                                     has_labels=all(t is not None for t in targets),
                                     calibration=calibration))
    if any(text is None for text in texts):  # every slot belongs to exactly one doc
        raise RuntimeError("eager-eval: a request slot was left without a string")
    return texts, outcomes  # type: ignore[return-value]


def group_statistics(outcome: GroupOutcome) -> dict[str, Any]:
    """Per-run numbers for `get_model_info()`: budget, sequences per round, tokens."""
    cfg, result = outcome.settings.config, outcome.result
    per_prompt = [p.n_sequences for p in result.prompts]
    return {
        "mode": cfg.mode.value,
        "n_prompts": len(result.prompts),
        "budget": total_budget(cfg.max_seqs, len(result.prompts)),
        "n_sequences": result.n_sequences,
        "seqs_min": min(per_prompt),
        "seqs_max": max(per_prompt),
        "tokens_generated": result.tokens_generated,
        "rounds": [
            {"round": r.round, "budget": r.budget, "candidates": len(r.allotments),
             "sequences_spent": r.sequences_spent, "tokens_generated": r.tokens_generated}
            for r in result.rounds
        ],
        "theta": result.settings["theta"],
        **({"theta_auto": outcome.calibration.to_dict()} if outcome.calibration else {}),
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "max_new_tokens": outcome.settings.max_new_tokens,
        "stop": list(outcome.settings.stop),
        "labels": outcome.has_labels,
        "wall_seconds": round(result.wall_seconds, 3),
    }


# ---------------------------------------------------------------------------------------------
# Model args
# ---------------------------------------------------------------------------------------------


def split_model_args(kwargs: Mapping[str, Any], accepted: frozenset[str],
                     model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(EagerConfig settings, the model's own args); an unknown name is a ConfigError listing
    every accepted name (EagerConfig fields and the model's own)."""
    return split_settings(kwargs, EagerConfig.field_names(), accepted, f"{model} model arg")


def _device_on_command_line(argv: Sequence[str] | None = None) -> bool:
    """Whether the lm_eval command line names a device (`--device X` or `--device=X`).

    lm-eval hands every model `device='cuda:0'` when the user gave none, so the value alone
    cannot tell a request from the default; the command line can.
    """
    args = sys.argv[1:] if argv is None else argv
    return any(a == "--device" or a.startswith("--device=") for a in args)


def _custom_datasets_of_requested_tasks() -> list[str]:
    """The `custom_dataset` values of the tasks lm-eval is about to build.

    lm-eval 0.4.13 tells a model nothing about the tasks and builds it first, so a missing data
    file showed only after the model had loaded. `simple_evaluate` holds the task names and the
    TaskManager in its frame while it builds the model: read them there. Outside
    `simple_evaluate` (a model built in Python) this finds nothing and checks nothing."""
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "simple_evaluate"
                                     and frame.f_globals.get("__name__") == "lm_eval.evaluator"):
        frame = frame.f_back
    if frame is None:
        return []
    tasks, manager = frame.f_locals.get("tasks"), frame.f_locals.get("task_manager")
    index = getattr(manager, "task_index", None)
    if not isinstance(index, Mapping) or not tasks:
        return []
    names = [tasks] if isinstance(tasks, str) else [t for t in tasks if isinstance(t, str)]
    return [str(entry.cfg["custom_dataset"]) for entry in _task_entries(names, index)
            if isinstance(entry.cfg, Mapping) and entry.cfg.get("custom_dataset")]


def _task_entries(names: Sequence[str], index: Mapping[str, Any], depth: int = 0) -> list[Any]:
    """Index entries of the tasks named; a tag or a group stands for its member tasks."""
    entries = []
    for name in names:
        entry = index.get(name)
        kind = getattr(getattr(entry, "kind", None), "name", None)
        if kind == "TASK":
            entries.append(entry)
        elif depth < 3:  # groups of groups, never a cycle
            if kind == "TAG":
                members = [e.name for e in index.values() if name in (e.tags or ())]
            else:
                members = (entry.cfg or {}).get("task") if kind == "GROUP" else None
            if isinstance(members, list):
                entries += _task_entries([m for m in members if isinstance(m, str)], index,
                                         depth + 1)
    return entries


# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------


class EagerLM(LM):
    """What eager-hf and eager-vllm share: model args, generate_until, chat, model info.

    A subclass says which engine it loads (`BACKEND`) and which args are its own
    (`ENGINE_ARGS`); `load(pretrained, engine_args)` loads it through `engines.load_engine`.
    """

    MODEL_NAME = "eager"
    BACKEND = "hf"
    ENGINE_ARGS: frozenset[str] = frozenset()
    """The subclass's own model args (what `load` takes), beside the shared ones."""
    SHARED_ARGS = frozenset({"chat", "enable_thinking", "think_end_token", "batch_size",
                             "max_batch_size", "trees"})
    """`chat` (auto | true | false) and `enable_thinking`: the prompt layer's settings;
    `think_end_token`: cut each slot's text to what follows it (HFLM's option); `batch_size`
    and `max_batch_size`: lm-eval's extras, used by the loglikelihood delegate only; `trees`:
    a directory where every finished tree is kept as it ends, and read back by the same
    command run again (`eager_eval.pipeline.tree_cache`: a crash or Ctrl-C loses no tree)."""

    def __init__(self, pretrained: str, engine: Engine | None = None, **model_args: Any) -> None:
        """`engine`: an already loaded Engine (Python; tests pass a scripted one)."""
        super().__init__()
        with log_user_errors(log):
            eager, own = split_model_args(model_args, self.ENGINE_ARGS | self.SHARED_ARGS,
                                          self.MODEL_NAME)
            eager, self._auto_theta = split_auto_theta(eager)
            self.eager_config = EagerConfig.from_mapping(eager)
            self._explicit = frozenset(eager)
            self.prompt_settings = PromptSettings(ChatMode.parse(own.pop("chat", "auto")),
                                                  parse_value(own.pop("enable_thinking", True)))
            self.think_end_token = own.pop("think_end_token", None)
            self._batch_size = own.pop("batch_size", 1)
            own.pop("max_batch_size", None)
            trees = own.pop("trees", None)
            self._trees_dir = None if trees in (None, "") else check_trees_dir(str(trees))
            # lm-eval builds the model before the tasks: read their data now, before it loads
            lm_eval_tasks.check_task_data(_custom_datasets_of_requested_tasks())
            self._model_name = str(pretrained)
            self.engine = engine if engine is not None else self.load(str(pretrained), own)
            self.engine.verify(self.eager_config)  # entropy_k within the vocabulary, marker
        self._harness_applied_chat = False
        self._task_stats: dict[str, list[dict[str, Any]]] = {}
        self._announced: set[tuple[str | None, str]] = set()
        self._loglikelihood_lm: LM | None = None

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any],
                            additional_config: dict[str, Any] | None = None) -> Any:
        """The CLI's constructor. Its extras (`device` = 'cuda:0' by default, `batch_size`) may
        repeat a model arg; the model arg wins (stock HFLM fails with 'multiple values')."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if extra.get("device") == LM_EVAL_DEFAULT_DEVICE and not _device_on_command_line():
            del extra["device"]  # lm-eval's default, not a request: no CUDA warning on a CPU
        return cls(**{**extra, **arg_dict})

    @classmethod
    def create_from_arg_string(cls, arg_string: str,
                               additional_config: dict[str, Any] | None = None) -> Any:
        return cls.create_from_arg_obj(parse_key_values(arg_string), additional_config)

    def load(self, pretrained: str, engine_args: dict[str, Any]) -> Engine:
        raise NotImplementedError

    # --- what lm-eval reads of a model ----------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def tokenizer_name(self) -> str:
        """Fingerprints lm-eval's request cache under --apply_chat_template."""
        return str(getattr(self.tokenizer, "name_or_path", self._model_name)).replace("/", "__")

    @property
    def max_length(self) -> int | None:
        return getattr(self.engine, "context_length", None)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        template = getattr(self.tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        """--apply_chat_template: the prompt layer's template; the contexts then arrive
        rendered (and `chat=auto` applies no second template)."""
        self._harness_applied_chat = True
        return self._encoder().apply_template(chat_history, add_generation_prompt)

    # --- generation ----------------------------------------------------------------------

    def _encoder(self) -> PromptEncoder:
        return PromptEncoder.for_engine(self.engine, self.prompt_settings,
                                        think_end=self.eager_config.think_end)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _finalize(self, text: str) -> str:
        """Like HFLM: with a `think_end_token` model arg, return what follows the thinking."""
        marker = self.think_end_token
        if isinstance(marker, int):
            marker = self.tokenizer.decode([marker])
        if isinstance(marker, str) and marker:
            return text.split(marker)[-1].lstrip()
        return text

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        from eager_eval.pipeline.outputs import versions

        started = time.perf_counter()
        with log_user_errors(log), RunProgress(enabled=not disable_tqdm) as progress:
            texts, outcomes = generate_texts(
                requests, config=self.eager_config, new_backend=self.engine.new_backend,
                encoder=self._encoder(), rendered=self._harness_applied_chat,
                explicit=self._explicit, finalize=self._finalize, auto_theta=self._auto_theta,
                decode=self._decode, versions=versions("lm_eval"),
                open_store=self._open_store if self._trees_dir is not None else None,
                progress=progress)
        for outcome in outcomes:
            self._record(outcome)
        for instance, text in zip(requests, texts, strict=True):
            self.cache_hook.add_partial("generate_until", instance.args, text)
        log.info("eager-eval: %d requests, %d runs in %.1f s", len(requests), len(outcomes),
                 time.perf_counter() - started)
        return texts

    def _open_store(self, task: str, config: EagerConfig, prompts: Sequence[PromptInput],
                    labels: Sequence[Any]) -> ContextManager[TreeStore]:
        engine = self.engine.info() if hasattr(self.engine, "info") else {}
        fingerprint = pool_fingerprint(self._model_name, engine, config, prompts, labels)
        return cached_trees(self._trees_dir, f"lm_eval-{task}", fingerprint, log)

    def _record(self, outcome: GroupOutcome) -> None:
        """Statistics for get_model_info() and the one-line notes on slots and length."""
        group, result = outcome.group, outcome.result
        stats = group_statistics(outcome)
        self._task_stats.setdefault(group.task_name or "", []).append(stats)
        log.info("eager-eval: task %s: %d prompts, mode %s, M=%d -> %d sequences (%d-%d per "
                 "prompt), %d tokens, %.1f s", group.task_name, stats["n_prompts"], stats["mode"],
                 self.eager_config.max_seqs, stats["n_sequences"], stats["seqs_min"],
                 stats["seqs_max"], stats["tokens_generated"], stats["wall_seconds"])
        task = group.task_name
        docs = list(zip(group.docs, result.prompts, strict=True))
        if all(len(doc.slots) == 1 for doc, _ in docs):
            self._announce(task, "cons", (
                f"eager-eval: task {task} has repeats=1: each request gets its Cons@k "
                f"(majority-vote) sequence; all sequences are scored only by the tasks in "
                f"tasks/ (filter all_sequences)"))
        elif any(len(doc.slots) < prompt.n_sequences for doc, prompt in docs):
            self._announce(task, "short", (
                f"eager-eval: task {task}: some prompts have more sequences than the task's "
                f"repeats; the request slots hold the first ones, the all_sequences filter "
                f"gives metrics every one"))
        if outcome.settings.ignored:
            self._announce(task, "ignored", (
                f"eager-eval: task {task}: generation kwargs {list(outcome.settings.ignored)} "
                f"are ignored (EAGer samples with temperature, top_p and top_k only)"))
        warning = room_warning(outcome.prompt_lengths, outcome.settings.max_new_tokens,
                               self.max_length, self._model_name, "max_gen_toks")
        if warning:
            self._announce(task, "room", f"eager-eval: task {task}: {warning}")

    def _announce(self, task: str | None, kind: str, message: str) -> None:
        """Log `message` once per task and kind (one line, not one per run)."""
        if (task, kind) in self._announced:
            return
        self._announced.add((task, kind))
        log.log(logging.INFO if kind in ("cons", "short") else logging.WARNING, message)

    def get_model_info(self) -> dict[str, Any]:
        """Merged into the results JSON's `config` by lm-eval after the evaluation."""
        from eager_eval.pipeline.outputs import versions

        return {"eager_eval": {
            "model": self._model_name,
            "backend": self.BACKEND,
            "engine": self.engine.info() if hasattr(self.engine, "info") else {},
            "settings": {**self.eager_config.to_dict(),  # each task's theta: "tasks"
                         **({"theta": AUTO} if self._auto_theta else {})},
            "prompts": self.prompt_settings.to_dict(),
            "seed": self.eager_config.seed,
            "versions": versions("lm_eval"),
            "tasks": self._task_stats,
            "prompt_overlength": "refused (a prompt must leave room in the model's context)",
            **({"trees": str(self._trees_dir)} if self._trees_dir is not None else {}),
        }}

    # --- loglikelihood: lm-eval's own model, around the loaded weights ---------------------

    def loglikelihood_delegate(self) -> LM:
        raise ConfigError("task", "loglikelihood", "", message=(
            f"{self.MODEL_NAME} generates with EAGer only: a loglikelihood task needs "
            "--model eager-hf (which hands it to lm-eval's HFLM) or lm-eval's own models"))

    def _delegate(self) -> LM:
        if self._loglikelihood_lm is None:
            with log_user_errors(log):
                self._loglikelihood_lm = self.loglikelihood_delegate()
        return self._loglikelihood_lm

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list:
        return self._delegate().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list:
        return self._delegate().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)


@register_model("eager-hf")
class EagerHFLM(EagerLM):
    """`--model eager-hf`: EAGer on transformers (`engines.HFEngine`).

    `--model_args` take `pretrained=` (hub id, local dir, .gguf file or `smollm2-135m`), every
    EagerConfig name (mode, theta, max_seqs, seed, ...), `device`, `dtype`, `max_rows` (most
    live rows in a batch; each tree reserves its cap), `chat`, `enable_thinking`,
    `think_end_token`.
    """

    MODEL_NAME = "eager-hf"
    BACKEND = "hf"
    ENGINE_ARGS = frozenset({"device", "dtype", "max_rows"})

    def load(self, pretrained: str, engine_args: dict[str, Any]) -> Engine:
        from eager_eval.engines import registry as engines
        from eager_eval.engines.models import check_device, dtype_name, resolve_model

        resolve_model(pretrained)  # a bad name fails before torch loads
        max_rows = positive_int(engine_args.get("max_rows", 64), "max_rows",
                                "(most sequences decoded together)")
        device = _device(engine_args.get("device"), "device" in engine_args)
        dtype = dtype_name(engine_args.get("dtype"))  # checked before the load, like the device
        check_device(device)
        return engines.load_engine(pretrained, backend="hf", device=device, dtype=dtype,
                                   max_rows=max_rows)

    @property
    def device(self) -> Any:
        return getattr(getattr(self.engine, "model", None), "device", None)

    def loglikelihood_delegate(self) -> LM:
        """lm-eval's HFLM around the loaded model and tokenizer (HFLM's public constructor)."""
        from lm_eval.models.huggingface import HFLM

        log.info("eager-eval: loglikelihood requests go to lm-eval's HFLM on the loaded weights")
        return HFLM(pretrained=self.engine.model, tokenizer=self.engine.tokenizer,
                    batch_size=self._batch_size, max_length=self.max_length)


@register_model("eager-vllm")
class EagerVLLM(EagerLM):
    """`--model eager-vllm`: EAGer on a vLLM engine (`engines.VLLMEngine`).

    The engine is built for EAGer (`backends.vllm.load_llm`): prefix caching on (a fork is a new
    request on a cached prefix), `max_logprobs >= entropy_k`, `logprobs_mode` matching
    `entropy_source`. Model args other than EagerConfig's and the shared ones are vLLM engine
    arguments (`dtype`, `tensor_parallel_size`, `gpu_memory_utilization`, ...), which vLLM
    itself checks; `device` is ignored (vLLM places itself).
    """

    MODEL_NAME = "eager-vllm"
    BACKEND = "vllm"

    def __init__(self, pretrained: str, engine: Engine | None = None, **model_args: Any) -> None:
        self._engine_args = {k: v for k, v in model_args.items()
                             if k not in EagerConfig.field_names() | self.SHARED_ARGS
                             and k not in RENAMED}
        rest = {k: v for k, v in model_args.items() if k not in self._engine_args}
        super().__init__(pretrained, engine, **rest)

    def load(self, pretrained: str, engine_args: dict[str, Any]) -> Engine:
        from eager_eval.engines import registry as engines

        args = dict(self._engine_args)
        args.pop("device", None)  # vLLM places itself (CUDA_VISIBLE_DEVICES)
        dp = int(args.get("data_parallel_size", 1) or 1)
        if dp > 1:
            raise ConfigError(
                "data_parallel_size", dp, "1 for eager-vllm: it drives one engine step by "
                "step; use tensor_parallel_size=N to use several GPUs")
        dtype = args.pop("dtype", None)
        args.setdefault("seed", self.eager_config.seed)
        return engines.load_engine(pretrained, backend="vllm", dtype=dtype,
                                   config=self.eager_config, **args)

    def loglikelihood_delegate(self) -> LM:
        """The loaded engine scores them (prompt logprobs): no second engine on the GPU."""
        from eager_eval.frontends.lm_eval.vllm_scoring import VLLMScorer

        log.info("eager-eval: loglikelihood requests are scored by the loaded vLLM engine")
        return VLLMScorer(self.engine.llm, self.engine.tokenizer, self.max_length)


def _device(requested: Any, given: bool) -> str:
    """The hf device: the one asked for, with CUDA falling back to the CPU where there is none
    (said when the user asked for it; lm-eval's default 'cuda:0' falls back quietly)."""
    device = str(requested) if requested is not None else "cuda"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            if given:
                log.warning("eager-eval: device %r requested but CUDA is not available; "
                            "using cpu", device)
            return "cpu"
    return device
