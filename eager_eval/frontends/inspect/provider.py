"""The Inspect AI model provider `eager`: concurrent generate() calls pooled into budget pools.

Inspect runs every sample (x epoch) as its own asyncio task, each calling `generate()` once.
EAGer's budget pool needs a task's prompts together (METHOD.md section 4), so the provider
holds the calls as they arrive (`batcher.CallBatcher`) and answers them all from one pool per
run settings once no more can come (`worker.BatchWorker`, through `pipeline.pool.run_pool`):

- **The whole task, by default.** The provider asks Inspect to let every sample call at once
  (`connections.admit_every_call`: a --max-connections the user did not set), and a batch
  closes when every sample of the eval that can still call is waiting in it
  (`samples.pool_state`). `-M batch_size=N` caps a pool (memory); an explicit
  `--max-connections N` or `--max-samples N` below the task's size splits it. Calls from
  outside an eval (Python) batch within a `batch_window`-second window. docs/INSPECT.md.
- **Weights load late.** Building the provider checks the options, the model name, the device
  and the dtype; the weights load (`engines.load_engine`) at the first generate()
  (`LazyEngine`), after Inspect has built the tasks, so a task's missing data shows before a
  model loads.
- **Off the event loop.** Tokenising, running and decoding happen in a worker thread, one batch
  at a time (one engine, one run). The event loop only waits.
- **Settings.** `-M` takes every `EagerConfig` field, the `EngineOptions` (backend, device,
  dtype, max_rows, threads, engine_args) and the `ProviderOptions` below. Inspect's
  GenerateConfig maps onto EagerConfig: max_tokens -> max_new_tokens, temperature, top_p,
  top_k, seed; stop_seqs become the prompt's stop strings. An `-M` setting wins over
  GenerateConfig, which wins over EagerConfig's defaults (a task's config cannot silently undo
  an explicit -M). Calls whose run-level settings differ (e.g. two temperatures) go to
  separate pools.
- **Labels.** Full EAGer (`mode=eager`) needs each sample's target. Inspect hands a provider
  only messages and GenerateConfig, so the solver `eager_generate()` (`scorers.py`) passes it
  in `extra_body[LABEL_KEY]`.
- **Outputs.** Every sequence is a `ChatCompletionChoice` (the root of round 0 first); usage's
  output_tokens is #T (shared prefixes once); `ModelOutput.metadata` holds the prompt's record
  (docs/FORMAT.md), which `inspect view` shows per sample.
- **User errors.** A bad option or model name is logged as one `eager-eval: error: ...` line
  before Inspect's traceback; a task's missing data file is one line with no traceback
  (`scorers.task_data`).

Nothing here imports torch at import time.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping, Sequence

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
)
from inspect_ai.log import transcript
from inspect_ai.tool import ToolChoice, ToolInfo

from eager_eval.common.errors import log_user_errors
from eager_eval.common.settings import SettingError, positive_int, positive_number, split_settings
from eager_eval.core.config import EagerConfig, Mode
from eager_eval.core.results import FinishReason
from eager_eval.engines.registry import Engine, EngineOptions, load_engine
from eager_eval.frontends.inspect.batcher import CallBatcher
from eager_eval.frontends.inspect.connections import (
    ADMIT_ALL,
    MODEL_INFO_LOOKUP_API_KEY,
    admit_every_call,
)
from eager_eval.frontends.inspect.samples import call_origin, pool_state
from eager_eval.frontends.inspect.worker import (
    LABEL_KEY,
    BatchWorker,
    CallAnswer,
    GenerateRequest,
    Label,
    Target,
)
from eager_eval.pipeline.prompts import ChatMode, PromptSettings
from eager_eval.pipeline.store import TreesDir

__all__ = ["EagerModelAPI", "ProviderOptions", "Label", "LABEL_KEY", "GenerateRequest",
           "CallAnswer", "CallBatcher", "BatchWorker", "split_model_args", "model_output",
           "MODEL_INFO_LOOKUP_API_KEY"]

logger = logging.getLogger("eager_eval.frontends.inspect")

ConfigError = SettingError

GENERATE_TO_EAGER = {
    "max_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
}
"""GenerateConfig field -> EagerConfig field it sets (when the same -M setting is absent)."""

_STOP_REASONS = {FinishReason.EOS: "stop", FinishReason.STOP: "stop", FinishReason.LENGTH: "max_tokens",
                 FinishReason.CONFIDENCE: "unknown", FinishReason.CONSENSUS: "unknown"}
"""Inspect's stop reason per finish reason; a DeepConf stop has none of its own (the record in
the output's metadata says which)."""


@dataclass(frozen=True)
class ProviderOptions:
    """The -M options that are neither EAGer settings nor engine options: how calls batch,
    how prompts are built, where trees are kept."""

    batch_window: float = 2.0
    """Seconds (> 0, finite) a batch waits where the eval's samples cannot tell it whether more
    calls are coming: calls from outside an Inspect eval, or when Inspect holds samples back
    (--max-samples / --max-connections below the task's size) while all running ones wait."""
    batch_size: int | None = None
    """Most calls one batch (one budget pool) takes; None: no cap (the whole task). Memory
    while decoding is bounded by max_rows whatever the pool size; a cap bounds what a pool
    holds (every sequence of its prompts) and how long its first results take."""
    chat: ChatMode | bool | str = ChatMode.AUTO
    """auto | true | false: the tokenizer's chat template over the messages (auto: when it
    has one; false: their texts joined); `pipeline.prompts`, the same rule as the CLI's."""
    enable_thinking: bool = True
    """Passed to chat templates that read it (Qwen3-style); ignored by the others."""
    trees: str | None = None
    """A directory where every finished tree is kept as it ends; the same eval run again reads
    them back and generates only the rest (`store.TreesDir`: a crash loses no tree)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_window", positive_number(
            self.batch_window, "batch_window",
            "a finite number of seconds > 0 (how long a batch waits for calls)"))
        if self.batch_size is not None:
            positive_int(self.batch_size, "batch_size")
        object.__setattr__(self, "chat", ChatMode.parse(self.chat))
        if not isinstance(self.enable_thinking, bool):
            raise ConfigError("enable_thinking", self.enable_thinking, "true or false")
        if self.trees is not None:
            TreesDir.checked(str(self.trees))

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @property
    def prompt_settings(self) -> PromptSettings:
        return PromptSettings(self.chat, self.enable_thinking)  # type: ignore[arg-type]


def split_model_args(model_args: Mapping[str, Any]) -> tuple[ProviderOptions, EngineOptions,
                                                              dict[str, Any]]:
    """-M options -> (provider options, engine options, EAGer settings). An unknown name is an
    error that lists every accepted one."""
    names = ProviderOptions.field_names() | EngineOptions.field_names()
    eager, own = split_settings(model_args, EagerConfig.field_names(), names,
                                "-M option of the eager provider")
    engine = {k: v for k, v in own.items() if k in EngineOptions.field_names()}
    if engine.get("engine_args") is None:
        engine.pop("engine_args", None)
    provider = {k: v for k, v in own.items() if k not in engine and k != "engine_args"}
    return ProviderOptions(**provider), EngineOptions.from_mapping(engine), eager


class EagerModelAPI(ModelAPI):
    """`--model eager/<name>`: <name> is a hub id, a local directory, a .gguf file or an alias
    (smollm2-135m). See the module docstring and docs/INSPECT.md."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig | None = None,
        *,
        engine: Engine | None = None,
        **model_args: Any,
    ) -> None:
        """`engine`: an already loaded Engine (Python only; tests pass a ScriptedEngine).
        Otherwise what needs no weights is checked here and the weights load at the first
        generate() (`LazyEngine`): Inspect builds the model before it loads the tasks."""
        config = GenerateConfig() if config is None else config
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        self.engine: Engine | None = None
        self.is_lookup_only = api_key == MODEL_INFO_LOOKUP_API_KEY
        if self.is_lookup_only:
            # Inspect builds a throwaway instance (no -M) only to ask canonical_name() for its
            # model-info lookup; it must load nothing.
            return
        if engine is not None and not hasattr(engine, "new_backend"):
            raise ConfigError("engine", engine, "a loaded Engine object (Python only); choose the "
                              "engine with -M backend=hf|vllm")
        with log_user_errors(logger):  # the clear line before Inspect's traceback
            self.options, self.engine_options, self.eager_settings = split_model_args(model_args)
            self.base_config = EagerConfig.from_mapping(self.eager_settings)
            if engine is None:
                self.engine_options.check(model_name)  # name, device: before Inspect's tasks
                engine = LazyEngine(lambda: self._load_engine(model_name))
        self.engine = engine
        admit_every_call(config)
        trees = (TreesDir.checked(self.options.trees, logger)
                 if self.options.trees is not None else None)
        self.worker = BatchWorker(engine, Target(model_name, self.engine_options,
                                                 self.options.prompt_settings, trees))
        self.batcher: CallBatcher[GenerateRequest, CallAnswer] = CallBatcher(
            self.worker.run_batch, self.options.batch_window, pool_state)
        self._warned: set[str] = set()
        self._logged: set[str] = set()

    def _load_engine(self, model_name: str) -> Engine:
        with log_user_errors(logger):
            # vllm: the config fixes the engine's top-K logprobs at start-up
            engine = load_engine(model_name, self.engine_options, self.base_config)
            engine.verify(self.base_config)  # top-K within the vocabulary, the marker encodes
        # What ran (the device auto resolved to, the dtype, the batch): an info event in the
        # transcript of the sample whose call loaded it (Inspect drops INFO lines of other
        # packages' loggers at its default log level).
        info = engine.info()
        transcript().info({"engine": info}, source="eager-eval")
        logger.info("eager-eval: engine %s", json.dumps(info, sort_keys=True))
        return engine

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        if self.is_lookup_only:
            raise RuntimeError("this eager provider instance was built for a model-info lookup")
        request = self.request_for(input, tools, config)
        answer = await self.batcher.submit(request, self.pool_cap(config), call_origin())
        return model_output(self.model_name, answer)

    def pool_cap(self, config: GenerateConfig) -> int | None:
        """Most calls one pool takes: -M batch_size, and never more than Inspect lets in at
        once (its max_connections): a batch holding that many can wait for no other call."""
        caps = [c for c in (self.options.batch_size, config.max_connections) if c]
        return min(caps) if caps else None

    def request_for(self, input: Sequence[ChatMessage], tools: Sequence[ToolInfo],
                    config: GenerateConfig) -> GenerateRequest:
        """Resolve one call (raises for this call only). A user error (max_tokens 0, a negative
        temperature from the task's GenerateConfig) is logged as the one clear line first,
        once per eval, as the -M errors are."""
        with log_user_errors(logger, self._logged):
            return self._request_for(input, tools, config)

    def _request_for(self, input: Sequence[ChatMessage], tools: Sequence[ToolInfo],
                     config: GenerateConfig) -> GenerateRequest:
        if tools:
            raise ConfigError("tools", [t.name for t in tools], "", message=(
                "the eager provider does not support tool use: run the task without tools "
                "(EAGer branches plain generations)"))
        eager = self.settings_for(config)
        label = Label.from_extra_body(config.extra_body)
        if eager.mode is Mode.EAGER and label is None:
            raise ConfigError(
                "mode", eager.mode.value, "", message=(
                    "mode=eager (full EAGer) needs each sample's target: generate with the "
                    "eager_generate() solver (eager_eval.frontends.inspect.scorers; the tasks "
                    "in tasks/ use it), or use mode=eager_adapt, which needs no labels"))
        return GenerateRequest(_chat_messages(input), eager, tuple(config.stop_seqs or ()), label)

    def settings_for(self, config: GenerateConfig) -> EagerConfig:
        """-M settings win over GenerateConfig, which wins over EagerConfig's defaults."""
        values: dict[str, Any] = {}
        given_as: dict[str, str] = {}
        for generate_name, eager_name in GENERATE_TO_EAGER.items():
            value = getattr(config, generate_name)
            if value is None:
                continue
            if eager_name in self.eager_settings:
                self._warn_override(eager_name, generate_name, value)
                continue
            values[eager_name] = value
            given_as[eager_name] = generate_name
        values.update(self.eager_settings)
        try:
            return EagerConfig.from_mapping(values)
        except ConfigError as err:
            name = given_as.get(err.parameter)
            if name is None:
                raise
            raise ConfigError(err.parameter, err.value, "", message=(
                f"{err} (Inspect's {name}: --{name.replace('_', '-')} or the task's "
                f"GenerateConfig; -M {err.parameter}=... overrides it)")) from None

    def _warn_override(self, eager_name: str, generate_name: str, value: Any) -> None:
        mine = self.eager_settings[eager_name]
        if eager_name in self._warned or str(mine) == str(value):
            return
        self._warned.add(eager_name)
        logger.warning("eager: -M %s=%s overrides GenerateConfig %s=%s", eager_name, mine,
                       generate_name, value)

    def max_tokens(self) -> int | None:
        """None: no --max-tokens leaves EagerConfig's max_new_tokens (or -M) in charge."""
        return None

    def max_connections(self) -> int:
        """Used only with --adaptive-connections false and no --max-connections, which
        `admit_every_call` leaves nowhere: the model's config then holds ADMIT_ALL."""
        return ADMIT_ALL

    def should_retry(self, ex: Exception) -> bool:
        return False  # local generation: a retry fails the same way

    def close(self) -> None:
        """Free the engine when Inspect closes the model (also what `aclose` does): its
        weights, and on a GPU their memory, go back before the next model of an eval set
        loads. A later generate() would load them again."""
        engine = self.engine
        if isinstance(engine, LazyEngine):
            engine.unload()
        elif engine is not None and hasattr(engine, "close"):
            engine.close()
        free_device_memory()


class LazyEngine:
    """An Engine whose weights load at the first call that needs them (once; a failed load is
    raised again to every later call, not retried).

    Inspect builds the model before it builds the tasks, so a task whose data is missing (no
    GPQA CSV offline) failed only after the weights had loaded. Loading on first use lets the
    tasks load, and fail, first; what needs no weights was checked when the provider was built.
    """

    def __init__(self, load: Callable[[], Engine]) -> None:
        self._load = load
        self._engine: Engine | None = None
        self._error: Exception | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> Engine:
        with self._lock:
            if self._engine is None:
                if self._error is not None:
                    raise self._error
                try:
                    self._engine = self._load()
                except Exception as err:
                    self._error = err
                    raise
            return self._engine

    def unload(self) -> None:
        """Drop the loaded weights (the next use loads them again)."""
        with self._lock:
            self._engine, self._error = None, None

    @property
    def is_loaded(self) -> bool:
        return self._engine is not None

    def __getattr__(self, name: str) -> Any:  # name, tokenizer, new_backend, context_length ...
        if name.startswith("_"):  # our own fields, before __init__ set them (copy, pickle)
            raise AttributeError(name)
        return getattr(self.loaded, name)


def free_device_memory() -> None:
    """Collect the dropped engine's objects and hand a CUDA device's cached blocks back (torch
    keeps freed memory cached for its own next allocation otherwise)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")  # never imported here just to free nothing
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _chat_messages(input: Sequence[ChatMessage]) -> tuple[dict[str, str], ...]:
    messages = []
    for message in input:
        if message.role == "tool":
            raise ValueError("the eager provider does not support tool messages")
        messages.append({"role": message.role, "content": message.text})
    return tuple(messages)


# ----------------------------------------------------------------------------------------------
# Results back to Inspect
# ----------------------------------------------------------------------------------------------


def model_output(model_name: str, answer: CallAnswer) -> ModelOutput:
    """All sequences as choices (the root of round 0 first), #T as output tokens, the prompt's
    record (docs/FORMAT.md) as the output's metadata, which Inspect logs per sample."""
    result = answer.result
    choices = [
        ChatCompletionChoice(
            message=ChatMessageAssistant(
                content=seq.text, model=model_name, source="generate",
                metadata={"sequence": seq.index, "round": seq.round},
            ),
            stop_reason=_STOP_REASONS[seq.finish_reason],
        )
        for seq in result.sequences
    ]
    input_tokens = len(answer.prompt.input.tokens)
    return ModelOutput(
        model=model_name,
        choices=choices,
        usage=ModelUsage(input_tokens=input_tokens, output_tokens=result.tokens_generated,
                         total_tokens=input_tokens + result.tokens_generated),
        time=answer.run.wall_seconds,
        metadata=answer.record.to_dict(),
    )
