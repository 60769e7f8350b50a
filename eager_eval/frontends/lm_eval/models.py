"""lm-evaluation-harness models `eager-hf` and `eager-vllm`: EAGer behind lm-eval's `LM` API.

The models implement lm-eval's public contract (`lm_eval.api.model.LM`, the three methods of
`lm_eval/models/dummy.py`) by composition:

- `generate_until` turns lm-eval's requests into one budget pool per task (`requests.py`) and
  runs each through the one pipeline, `pipeline.pool.run_pool`, on an engine from
  `engines.load_engine` (the loading path of the CLI and the Inspect provider);
- `loglikelihood` and `loglikelihood_rolling` go to lm-eval's own HFLM, built around the
  already loaded weights and tokenizer the first time a task asks for them (`HFLM(pretrained=
  <the model object>, tokenizer=<the tokenizer>)`, HFLM's public constructor). eager-vllm's
  are scored by its own loaded engine (`vllm_scoring.VLLMScorer`): a second engine would not
  fit beside it.

Each doc's record rides its slot strings back to the tasks' metrics (`slot_text.py`). The
model classes only parse their model args, load, hold statistics for `get_model_info()`
(results JSON, `config.eager_eval`) and delegate loglikelihood.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from eager_eval.common.errors import log_user_errors
from eager_eval.common.words import plural
from eager_eval.common.settings import (
    RENAMED,
    SettingError,
    parse_key_values,
    parse_value,
    split_settings,
)
from eager_eval.core.config import EagerConfig, total_budget
from eager_eval.engines.registry import Engine, EngineOptions, load_engine
from eager_eval.frontends.lm_eval import tasks as lm_eval_tasks
from eager_eval.frontends.lm_eval.default_device import without_default_device
from eager_eval.frontends.lm_eval.requests import (
    DEFAULT_MAX_GEN_TOKS,
    RequestGroup,
    RequestSettings,
    doc_label,
    group_requests,
    request_settings,
    texts_for_slots,
)
from eager_eval.frontends.lm_eval.slot_text import NO_SEQUENCE, SlotText
from eager_eval.frontends.lm_eval.task_discovery import requested_custom_datasets
from eager_eval.pipeline.pool import Pool, PoolOutcome, pool_prompt, run_pool
from eager_eval.pipeline.progress import RunProgress
from eager_eval.pipeline.prompts import ChatMode, Prompt, PromptEncoder, PromptSettings, room_warning
from eager_eval.pipeline.store import TreeFiles, TreesDir

__all__ = ["EagerLM", "EagerHFLM", "EagerVLLM", "NO_SEQUENCE", "GroupOutcome",
           "generate_texts", "group_statistics", "split_model_args"]

log = logging.getLogger("lm_eval.eager_eval")
"""A child of lm-eval's logger, so its CLI prints these lines with its own."""

LABEL_HINT = ("use a task from tasks/ (aime25, gpqa_diamond, eager_demo), or give generation "
              "kwargs eager_answer_type=math|choice and eager_target_field=<doc field with the "
              "answer>")
"""How an lm-eval user gives full EAGer its labels."""


@dataclass
class GroupOutcome:
    """One group's pool: what statistics and the task metrics need."""

    group: RequestGroup
    settings: RequestSettings
    pool: PoolOutcome

    @property
    def result(self) -> Any:
        return self.pool.result

    @property
    def records(self) -> list[Any]:
        return self.pool.records


@dataclass(frozen=True)
class Run:
    """What a generate_until call runs on (the model's, fixed at construction)."""

    engine: Engine
    model: str
    options: EngineOptions
    prompts: PromptSettings
    config: EagerConfig
    explicit: frozenset[str] = frozenset()
    """EagerConfig names the model args set (a request's sampling overrides them with a note)."""
    trees: TreeFiles | None = None


def generate_texts(
    requests: Sequence[Instance],
    run: Run,
    *,
    rendered: bool = False,
    sources: Mapping[str, str] | None = None,
    finalize: Callable[[str], str] = lambda text: text,
    progress: RunProgress | None = None,
    default_max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
) -> tuple[list[str], list[GroupOutcome]]:
    """Exactly one string (a `SlotText`) per request, in request order, plus each group's pool.

    `rendered`: lm-eval already put the contexts in the chat template (--apply_chat_template);
    `sources`: such a context -> its messages' own words (what the record keeps as the
    prompt, docs/FORMAT.md); `finalize` post-processes a
    sequence's text before it fills a slot (e.g. cut the thinking block off), never a marker;
    `progress`: a bar per group (trees done, tokens/s), as the CLI draws them.
    """
    sources = sources or {}
    texts: list[str | None] = [None] * len(requests)
    outcomes: list[GroupOutcome] = []
    for group in group_requests(requests):
        settings = request_settings(group.gen_kwargs, run.config, explicit=run.explicit,
                                    default_max_gen_toks=default_max_gen_toks)
        encoder = PromptEncoder.for_engine(run.engine, run.prompts,
                                           think_end=settings.config.think_end)
        prompts = []
        for doc in group.docs:
            label, kind = doc_label(doc, settings)
            context = doc.context
            prompt = Prompt(context, settings.stop, settings.max_new_tokens, rendered=rendered)
            prompts.append(pool_prompt(
                encoder, prompt, str(doc.fields.get("id", doc.instance.doc_id)), label=label,
                answer_type=kind, name=f"doc {doc.instance.doc_id} of task {group.task_name}",
                text=sources.get(context, context),
                origin={"task": group.task_name, "doc_id": doc.instance.doc_id,
                        "slots": len(doc.slots)}))
        pool = Pool(f"lm_eval-{group.task_name}", prompts, settings.config, run.model,
                    run.options, run.prompts, label_hint=LABEL_HINT)
        outcome = run_pool(pool, run.engine, trees=run.trees, harness="lm_eval", progress=(
            None if progress is None else
            lambda name, n, stored: progress.method(group.task_name or "generate", n,
                                                    stored=stored)))
        for doc, record in zip(group.docs, outcome.records, strict=True):
            filled = texts_for_slots(record, len(doc.slots))
            for slot, text in zip(doc.slots, filled, strict=True):
                texts[slot] = SlotText(text if text == NO_SEQUENCE else finalize(text), record)
        outcomes.append(GroupOutcome(group, settings, outcome))
    if any(text is None for text in texts):  # every slot belongs to exactly one doc
        raise RuntimeError("eager-eval: a request slot was left without a string")
    return texts, outcomes  # type: ignore[return-value]


def group_statistics(outcome: GroupOutcome) -> dict[str, Any]:
    """Per-pool numbers for `get_model_info()`: budget, sequences per round, tokens."""
    cfg, result = outcome.pool.config, outcome.result
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
        **({"theta_auto": outcome.pool.calibration.to_dict()} if outcome.pool.calibration else {}),
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "min_p": cfg.min_p,
        "max_new_tokens": outcome.settings.max_new_tokens,
        "stop": list(outcome.settings.stop),
        "labels": all(p.label is not None for p in outcome.pool.prompts),
        "wall_seconds": round(result.wall_seconds, 3),
    }


def split_model_args(kwargs: Mapping[str, Any], accepted: frozenset[str],
                     model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(EagerConfig settings, the model's own args); an unknown name is a ConfigError listing
    every accepted name (EagerConfig fields and the model's own)."""
    return split_settings(kwargs, EagerConfig.field_names(), accepted, f"{model} model arg")


class EagerLM(LM):
    """What eager-hf and eager-vllm share: model args, generate_until, chat, model info.

    A subclass says which engine it loads (`BACKEND`) and how its model args become
    EngineOptions (`engine_options`)."""

    MODEL_NAME = "eager"
    BACKEND = "hf"
    ENGINE_ARGS: frozenset[str] = frozenset()
    """The subclass's own model args (its engine options), beside the shared ones."""
    SHARED_ARGS = frozenset({"chat", "enable_thinking", "think_end_token", "batch_size",
                             "max_batch_size", "trees"})
    """`chat` (auto | true | false) and `enable_thinking`: the prompt layer's settings;
    `think_end_token`: cut each slot's text to what follows it (HFLM's option); `batch_size`
    and `max_batch_size`: lm-eval's extras, used by the loglikelihood delegate only; `trees`:
    a directory where every finished tree is kept as it ends, and read back by the same
    command run again (`store.TreesDir`: a crash or Ctrl-C loses no tree)."""

    def __init__(self, pretrained: str, engine: Engine | None = None, **model_args: Any) -> None:
        """`engine`: an already loaded Engine (Python; tests pass a ScriptedEngine)."""
        super().__init__()
        with log_user_errors(log):
            eager, own = split_model_args(model_args, self.ENGINE_ARGS | self.SHARED_ARGS,
                                          self.MODEL_NAME)
            self.eager_config = EagerConfig.from_mapping(eager)
            self._explicit = frozenset(eager)
            self.prompt_settings = PromptSettings(ChatMode.parse(own.pop("chat", "auto")),
                                                  parse_value(own.pop("enable_thinking", True)))
            self.think_end_token = own.pop("think_end_token", None)
            self._batch_size = own.pop("batch_size", 1)
            own.pop("max_batch_size", None)
            trees = own.pop("trees", None)
            self._trees = None if trees is None else TreesDir.checked(str(trees), log)
            self.options = self.engine_options(own)
            self._model_name = str(pretrained)
            # lm-eval builds the model before the tasks: read their data now, before it loads
            lm_eval_tasks.check_task_data(requested_custom_datasets())
            if engine is None:
                self.options.check(self._model_name)  # name, device: before anything loads
                engine = load_engine(self._model_name, self.options, self.eager_config)
            self.engine = engine
            self.engine.verify(self.eager_config)  # entropy_k within the vocabulary, marker
        self._harness_applied_chat = False
        self._sources: dict[str, str] = {}
        self._task_stats: dict[str, list[dict[str, Any]]] = {}
        self._announced: set[tuple[str | None, str]] = set()
        self._loglikelihood_lm: LM | None = None

    def engine_options(self, own: dict[str, Any]) -> EngineOptions:
        """The model's engine options from its own model args."""
        return EngineOptions(self.BACKEND, **own)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any],
                            additional_config: dict[str, Any] | None = None) -> Any:
        """The CLI's constructor. Its extras (`device` = 'cuda:0' by default, `batch_size`) may
        repeat a model arg; the model arg wins (stock HFLM fails with 'multiple values')."""
        return cls(**{**without_default_device(additional_config or {}), **arg_dict})

    @classmethod
    def create_from_arg_string(cls, arg_string: str,
                               additional_config: dict[str, Any] | None = None) -> Any:
        return cls.create_from_arg_obj(parse_key_values(arg_string), additional_config)

    # --- what lm-eval reads of a model ----------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def eot_token_id(self) -> int | None:
        """The tokenizer's end-of-text id, as HFLM and lm-eval's vLLM model give it (lm-eval
        reads it for the results' config; None where the tokenizer has none)."""
        return getattr(self.tokenizer, "eos_token_id", None)

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
        rendered (and `chat=auto` applies no second template). The record keeps the
        messages' own words as the prompt (docs/FORMAT.md), as every front end does."""
        self._harness_applied_chat = True
        text = self._encoder().apply_template(chat_history, add_generation_prompt)
        self._sources[text] = Prompt(tuple(chat_history)).text
        return text

    # --- generation ----------------------------------------------------------------------

    def _encoder(self) -> PromptEncoder:
        return PromptEncoder.for_engine(self.engine, self.prompt_settings,
                                        think_end=self.eager_config.think_end)

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
        started = time.perf_counter()
        run = Run(self.engine, self._model_name, self.options, self.prompt_settings,
                  self.eager_config, self._explicit, self._trees)
        with log_user_errors(log), RunProgress(enabled=not disable_tqdm) as progress:
            texts, outcomes = generate_texts(requests, run, rendered=self._harness_applied_chat,
                                             sources=self._sources, finalize=self._finalize,
                                             progress=progress)
        for outcome in outcomes:
            self._record(outcome)
        for instance, text in zip(requests, texts, strict=True):
            self.cache_hook.add_partial("generate_until", instance.args, text)
        log.info("eager-eval: %s, %s in %.1f s", plural(len(requests), "request"),
                 plural(len(outcomes), "pool"), time.perf_counter() - started)
        return texts

    def _record(self, outcome: GroupOutcome) -> None:
        """Statistics for get_model_info() and the one-line notes on slots and length."""
        group, result = outcome.group, outcome.result
        stats = group_statistics(outcome)
        self._task_stats.setdefault(group.task_name or "", []).append(stats)
        log.info("eager-eval: task %s: %s, mode %s, M=%d -> %s (%d-%d per prompt), %s, %.1f s",
                 group.task_name, plural(stats["n_prompts"], "prompt"), stats["mode"],
                 self.eager_config.max_seqs, plural(stats["n_sequences"], "sequence"),
                 stats["seqs_min"], stats["seqs_max"], plural(stats["tokens_generated"], "token"),
                 stats["wall_seconds"])
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
                f"are ignored (EAGer samples with temperature, top_p, top_k and min_p only)"))
        warning = room_warning([len(p.input.tokens) for p in outcome.pool.prompts],
                               outcome.settings.max_new_tokens, self.max_length,
                               self._model_name, "max_gen_toks")
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
        from eager_eval.pipeline.versions import versions

        return {"eager_eval": {
            "model": self._model_name,
            "backend": self.BACKEND,
            "engine": self.engine.info() if hasattr(self.engine, "info") else {},
            "settings": self.eager_config.to_dict(),  # each task's measured theta: "tasks"
            "prompts": self.prompt_settings.to_dict(),
            "seed": self.eager_config.seed,
            "versions": versions("lm_eval"),
            "tasks": self._task_stats,
            "prompt_overlength": "refused (a prompt must leave room in the model's context)",
            **({"trees": str(self._trees.directory)} if self._trees is not None else {}),
        }}

    # --- loglikelihood: lm-eval's own model, around the loaded weights ---------------------

    def _local_weights(self) -> None:
        """Loglikelihood scoring reads the weights in this process; replicas hold them on Ray."""
        if self.options.replicas > 1:
            raise SettingError("replicas", self.options.replicas, "", message=(
                f"{self.MODEL_NAME} with replicas={self.options.replicas} generates on Ray "
                f"actors, and a loglikelihood task needs the weights in this process: run "
                f"loglikelihood tasks with replicas=1"))

    def loglikelihood_delegate(self) -> LM:
        raise SettingError("task", "loglikelihood", "", message=(
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
    """`--model eager-hf`: EAGer on transformers (`engines.hf_engine.HFEngine`).

    `--model_args` take `pretrained=` (hub id, local dir, .gguf file or `smollm2-135m`), every
    EagerConfig name (mode, theta, max_seqs, seed, ...), the engine options `device` (default
    auto), `dtype`, `max_rows`, `threads`, `replicas` (engine replicas on Ray, one budget
    pool: docs/SCALE.md), and `chat`, `enable_thinking`, `think_end_token`, `trees`.
    """

    MODEL_NAME = "eager-hf"
    BACKEND = "hf"
    ENGINE_ARGS = frozenset({"device", "dtype", "max_rows", "threads", "replicas"})

    @property
    def device(self) -> Any:
        return getattr(getattr(self.engine, "model", None), "device", None)

    def loglikelihood_delegate(self) -> LM:
        """lm-eval's HFLM around the loaded model and tokenizer (HFLM's public constructor)."""
        from lm_eval.models.huggingface import HFLM

        self._local_weights()
        log.info("eager-eval: loglikelihood requests go to lm-eval's HFLM on the loaded weights")
        return HFLM(pretrained=self.engine.model, tokenizer=self.engine.tokenizer,
                    batch_size=self._batch_size, max_length=self.max_length)


@register_model("eager-vllm")
class EagerVLLM(EagerLM):
    """`--model eager-vllm`: EAGer on a vLLM engine (`engines.vllm.VLLMEngine`).

    The engine is built for EAGer (`engines.vllm.load_llm`): prefix caching on (a fork is a
    new request on a cached prefix), `max_logprobs >= entropy_k`, `logprobs_mode` matching
    `entropy_source`. Model args other than EagerConfig's and the shared ones are vLLM engine
    arguments (`dtype`, `tensor_parallel_size`, `gpu_memory_utilization`, ...), which vLLM
    itself checks; `device` is ignored (vLLM places itself).
    """

    MODEL_NAME = "eager-vllm"
    BACKEND = "vllm"

    def __init__(self, pretrained: str, engine: Engine | None = None, **model_args: Any) -> None:
        known = EagerConfig.field_names() | self.SHARED_ARGS | set(RENAMED)
        self.ENGINE_ARGS = frozenset(k for k in model_args if k not in known)
        super().__init__(pretrained, engine, **model_args)

    def engine_options(self, own: dict[str, Any]) -> EngineOptions:
        """`data_parallel_size=N` (lm-eval's vLLM spelling) is `replicas=N`: N engines as Ray
        actors under one budget pool, each with `tensor_parallel_size` GPUs."""
        args = dict(own)
        args.pop("device", None)  # vLLM places itself (CUDA_VISIBLE_DEVICES)
        replicas = args.pop("replicas", None)
        dp = args.pop("data_parallel_size", None)
        if replicas is not None and dp is not None and parse_value(replicas) != parse_value(dp):
            raise SettingError("data_parallel_size", dp, "", message=(
                f"replicas={replicas} and data_parallel_size={dp} disagree: they are the same "
                f"setting (data_parallel_size is lm-eval's name for it); give one"))
        dtype = args.pop("dtype", None)
        args.setdefault("seed", self.eager_config.seed)
        return EngineOptions(self.BACKEND, dtype=dtype, engine_args=args,
                             replicas=replicas if replicas is not None else (dp or 1))

    def loglikelihood_delegate(self) -> LM:
        """The loaded engine scores them (prompt logprobs): no second engine on the GPU."""
        from eager_eval.frontends.lm_eval.vllm_scoring import VLLMScorer

        self._local_weights()
        log.info("eager-eval: loglikelihood requests are scored by the loaded vLLM engine")
        return VLLMScorer(self.engine.llm, self.engine.tokenizer, self.max_length)
