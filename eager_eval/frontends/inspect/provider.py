"""The Inspect AI model provider `eager`: concurrent generate() calls pooled into one run().

Inspect runs every sample (x epoch) as its own asyncio task, each calling `generate()` once.
EAGer's budget pool needs a task's prompts together (METHOD.md section 4), so the provider
holds the calls as they arrive and answers them all from ONE `run()` once no more can come:

    generate() ─┐                               worker thread (one batch at a time)
    generate() ─┼─> CallBatcher ── batch ──> BatchWorker.run_batch: encode, group, run(), split
    generate() ─┘   (closes when every running     ─> one CallAnswer (or exception) per call
                     sample of the eval waits in it)

- **The whole task, by default.** The provider asks Inspect to let every sample call at once
  (`admit_every_call`: a --max-connections the user did not set), and a batch closes when every
  sample of the eval that can still call is waiting in it (`inspect_samples.pool_state`). So
  `inspect eval tasks/gpqa.py --model eager/<m>` pools all samples x epochs in one run, with no
  flags. `-M batch_size=N` caps a pool (memory); an explicit `--max-connections N` or
  `--max-samples N` below the task's size splits it (a batch then closes when it holds what
  Inspect lets in, or after `batch_window` seconds with the rest held back). Calls from outside
  an eval (Python) batch within a `batch_window`-second window. docs/INSPECT.md.
- **Weights load late.** Building the provider checks the options, the model name, the device
  and the dtype; the weights load (`engines.load_engine`) at the first generate()
  (`LazyEngine`), after Inspect has built the tasks, so a task's missing data shows before a
  model loads.
- **Off the event loop.** Tokenising and decoding run in a worker thread (`anyio.to_thread`),
  one batch at a time (a lock: one engine, one run). The event loop only waits.
- **Order.** Within a run, prompts are ordered by their token ids (ties: arrival), so seeds and
  the pool's "remainder to the first candidates" do not depend on which asyncio task came first.
- **Failures stay per call.** A call that cannot be prepared (tools, a bad setting, a prompt the
  tokenizer rejects) fails alone before the run. If a run of several prompts raises, its prompts
  are re-run one by one, so one bad prompt costs only its own sample.
- **Settings.** `-M` takes every `EagerConfig` field plus the `ProviderOptions` below. Inspect's
  GenerateConfig maps onto EagerConfig: max_tokens -> max_new_tokens, temperature, top_p, top_k,
  seed; stop_seqs become the prompt's stop strings. An `-M` setting wins over GenerateConfig,
  which wins over EagerConfig's defaults (a task's config cannot silently undo an explicit -M).
  Calls whose run-level settings differ (e.g. two temperatures) go to separate runs.
- **Labels.** Full EAGer (`mode=eager`) needs each sample's target. Inspect hands a provider
  only messages and GenerateConfig, so the solver `eager_generate()`
  (`frontends/inspect/scorers.py`) passes it in `extra_body[LABEL_KEY]`.
- **Outputs.** Every sequence is a `ChatCompletionChoice` (the root of round 0 first); usage's
  output_tokens is #T (shared prefixes once); `ModelOutput.metadata` holds the prompt's EAGer
  statistics and its pool's rounds, which `inspect view` shows per sample.

- **Prompt length.** A prompt that fills the model's context fails its own call, naming its
  length and the context (`engines.check_prompt_fits`).
- **User errors.** A bad option or model name is logged as one `eager-eval: error: ...` line
  before Inspect's traceback; a task's missing data file is one line with no traceback
  (`inspect_scorers.task_data`).

Nothing here imports torch at import time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Collection, ContextManager, Generic, Mapping, Sequence, TypeVar

import anyio
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
)
from inspect_ai.tool import ToolChoice, ToolInfo

try:  # the api_key Inspect passes when it builds a provider only to look up model info
    from inspect_ai.model._model_info import MODEL_INFO_LOOKUP_API_KEY
except ImportError:  # pragma: no cover (a private name; its value in inspect_ai 0.3.285)
    MODEL_INFO_LOOKUP_API_KEY = "__model_info_lookup__"

from eager_eval.pipeline.answers import AnswerType, labels_verifier
from eager_eval.pipeline.calibration import Calibration, calibrate_theta, split_auto_theta
from eager_eval.core.config import ConfigError, EagerConfig, Mode
from eager_eval.engines.registry import BACKENDS, Engine, load_engine
from eager_eval.common.errors import log_user_errors
from eager_eval.frontends.inspect.samples import CallOrigin, PoolState, call_origin, pool_state
from eager_eval.engines.models import resolve_model
from eager_eval.pipeline.progress import CounterProgress
from eager_eval.pipeline.prompts import ChatMode, Prompt, PromptEncoder, PromptSettings
from eager_eval.pipeline.record import Decode, PromptRecord, build_record
from eager_eval.core.results import FinishReason, PromptResult, RunResult
from eager_eval.core.runner import PromptInput, TreeStore, Verifier, run
from eager_eval.common.settings import positive_int, positive_number, split_settings
from eager_eval.pipeline.tree_cache import cached_trees, check_trees_dir, pool_fingerprint

__all__ = [
    "EagerModelAPI",
    "ProviderOptions",
    "Label",
    "LABEL_KEY",
    "GenerateRequest",
    "CallAnswer",
    "CallBatcher",
    "BatchWorker",
    "split_model_args",
    "prompt_record",
]

logger = logging.getLogger(__name__)

LABEL_KEY = "eager_eval_label"
"""Key in GenerateConfig.extra_body under which a solver passes the sample's `Label`."""

ADMIT_ALL = 10_000
"""The connection limit the provider asks Inspect for when the user set none: every sample x
epoch of a task may call at once (Inspect's own ceiling for batch APIs,
DEFAULT_MAX_CONNECTIONS_BATCH). A local engine has no rate limit to respect; what bounds its
memory is -M max_rows (live sequences) and -M batch_size (calls per pool)."""


def admit_every_call(config: GenerateConfig) -> None:
    """Let every sample of a task call generate() at once, unless the user set
    --max-connections.

    Inspect (0.3.285) runs at most max_samples samples and max_connections calls at a time, and
    by default adapts both between 10 and 100 (adaptive connections): a task of 198 samples
    would reach the pool in pieces. An explicit max_connections turns adaptation off and sets
    both limits (max_samples defaults to it). Inspect hands the model's GenerateConfig to the
    provider before it reads these limits from it (`Model.config` is this object), so setting
    it here is what `--max-connections` would do.
    """
    if config.max_connections is None:
        config.max_connections = ADMIT_ALL

GENERATE_TO_EAGER = {
    "max_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
}
"""GenerateConfig field -> EagerConfig field it sets (when the same -M setting is absent)."""

_STOP_REASONS = {FinishReason.EOS: "stop", FinishReason.STOP: "stop", FinishReason.LENGTH: "max_tokens"}


# ----------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderOptions:
    """The -M options that are not EAGer settings: how the model loads and how calls batch."""

    backend: str = "hf"
    """hf (transformers, CPU or CUDA) | vllm."""
    device: str | None = None
    """hf: cpu | cuda | cuda:N (None: cpu)."""
    dtype: str | None = None
    """auto | float32 | bfloat16 | float16 (None: auto = float32 on CPU, bf16 on CUDA)."""
    max_rows: int = 64
    """hf: live sequences per forward pass (soft: forks may exceed it, admission waits)."""
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
    has one; false: their texts joined); `eager_eval.pipeline.prompts`, the same rule as the CLI's."""
    enable_thinking: bool = True
    """Passed to chat templates that read it (Qwen3-style); ignored by the others."""
    engine_args: Mapping[str, Any] | None = None
    """vllm: extra keyword arguments for the engine (e.g. {gpu_memory_utilization: 0.8})."""
    trees: str | None = None
    """A directory where every finished tree is kept as it ends; the same eval run again reads
    them back and generates only the rest (`eager_eval.pipeline.tree_cache`: a crash loses no tree)."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError("backend", self.backend, f"one of: {', '.join(BACKENDS)}")
        for name in ("device", "dtype"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(name, value, "a string")
        object.__setattr__(self, "batch_window", positive_number(
            self.batch_window, "batch_window",
            "a finite number of seconds > 0 (how long a batch waits for calls)"))
        positive_int(self.max_rows, "max_rows")
        if self.batch_size is not None:
            positive_int(self.batch_size, "batch_size")
        object.__setattr__(self, "chat", ChatMode.parse(self.chat))
        if not isinstance(self.enable_thinking, bool):
            raise ConfigError("enable_thinking", self.enable_thinking, "true or false")
        if self.engine_args is not None and not isinstance(self.engine_args, Mapping):
            raise ConfigError("engine_args", self.engine_args, "a mapping of engine keyword arguments")
        if self.trees is not None:
            check_trees_dir(str(self.trees))

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @property
    def prompt_settings(self) -> PromptSettings:
        return PromptSettings(self.chat, self.enable_thinking)  # type: ignore[arg-type]


def split_model_args(model_args: Mapping[str, Any]) -> tuple[ProviderOptions, dict[str, Any]]:
    """-M options -> (provider options, EAGer settings). An unknown name is an error that lists
    every accepted one (EagerConfig fields and provider options)."""
    eager, own = split_settings(model_args, EagerConfig.field_names(),
                                ProviderOptions.field_names(), "-M option of the eager provider")
    return ProviderOptions(**own), eager


@dataclass(frozen=True)
class Label:
    """What the `eager_generate()` solver tells the provider about a call's sample: its gold
    answer (full EAGer's verifier, the record's grades) and its place in the task (the pool's
    prompt order, the record's id)."""

    target: str
    answer_type: AnswerType
    n_choices: int = 4
    index: int | None = None
    """The sample's place in the task's dataset (`TASK_INDEX` in its metadata); None: unknown,
    the pool orders such calls by their token ids."""
    sample_id: str | None = None
    epoch: int = 1

    @classmethod
    def from_extra_body(cls, extra_body: Mapping[str, Any] | None) -> "Label | None":
        data = (extra_body or {}).get(LABEL_KEY)
        if data is None:
            return None
        if not isinstance(data, Mapping) or "target" not in data or "answer_type" not in data:
            raise ConfigError(LABEL_KEY, data, "a mapping with 'target' and 'answer_type'")
        index = data.get("index")
        return cls(str(data["target"]), AnswerType(data["answer_type"]),
                   int(data.get("n_choices", 4)), None if index is None else int(index),
                   None if data.get("sample_id") is None else str(data["sample_id"]),
                   int(data.get("epoch", 1)))

    def to_extra_body(self) -> dict[str, Any]:
        return {LABEL_KEY: {"target": self.target, "answer_type": self.answer_type.value,
                            "n_choices": self.n_choices, "index": self.index,
                            "sample_id": self.sample_id, "epoch": self.epoch}}

    @property
    def order(self) -> tuple[int, int] | None:
        """Where the call's prompt goes in its pool: task order, epoch by epoch (the order the
        CLI and lm-eval give the same prompts)."""
        return None if self.index is None else (self.epoch, self.index)


# ----------------------------------------------------------------------------------------------
# What crosses into the worker thread
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateRequest:
    """One generate() call, resolved: everything the worker needs, nothing of Inspect's."""

    messages: tuple[Mapping[str, str], ...]
    config: EagerConfig
    """Settings after precedence (-M > GenerateConfig > defaults); max_new_tokens is per call."""
    stop: tuple[str, ...] = ()
    label: Label | None = None


@dataclass(frozen=True)
class CallAnswer:
    """One call's share of a run: its request, its prompt and the run (the pool) it was in."""

    request: GenerateRequest
    prompt: PromptInput
    run: RunResult
    pool_index: int
    """Index of this call's prompt in `run.prompts`."""
    calibration: Calibration | None = None
    """theta=auto: how the run's theta was measured (`run.settings` holds the value)."""

    @property
    def result(self) -> PromptResult:
        return self.run.prompts[self.pool_index]


Outcome = CallAnswer | Exception


Counter = Callable[[str, str], None]
"""(caption, value) -> shown in Inspect's task display."""

POOL_COUNTER = "eager pool"
"""The caption of a pool's progress in Inspect's display (prompts done, reallocation trees,
tokens/s): `progress.CounterProgress`."""


def inspect_counter(caption: str, value: str) -> None:
    """Inspect's public `display_counter`, called on its event loop (the pool runs in a worker
    thread, and the display is not thread-safe). Outside Inspect's worker threads: nothing."""
    from inspect_ai.util import display_counter

    try:
        anyio.from_thread.run_sync(display_counter, caption, value)
    except RuntimeError:  # no event loop to hand it to (a direct call, a test)
        pass


class BatchWorker:
    """Runs batches of requests on one engine, one batch at a time (called in a worker thread)."""

    def __init__(self, engine: Engine, options: ProviderOptions, auto_theta: bool = False,
                 counter: Counter = inspect_counter) -> None:
        """`auto_theta`: calibrate theta (theta=auto) on the first pool of each set of run
        settings; later pools of the same settings reuse it, so one task has one theta.
        `counter`: where each pool's progress is shown (Inspect's display)."""
        self.engine = engine
        self.options = options
        self.auto_theta = auto_theta
        self.counter = counter
        self._calibrations: dict[EagerConfig, Calibration] = {}
        self._lock = threading.Lock()

    def run_batch(self, requests: Sequence[GenerateRequest]) -> list[Outcome]:
        """One outcome per request, in order: a CallAnswer, or the exception that call raises."""
        with self._lock:
            outcomes: list[Outcome | None] = [None] * len(requests)
            groups: dict[EagerConfig, list[tuple[int, PromptInput]]] = {}
            for i, request in enumerate(requests):                 # 1) encode, per call
                try:
                    prompt = self.prompt_input(request)
                except Exception as err:  # noqa: BLE001 (the call fails alone)
                    outcomes[i] = err
                    continue
                groups.setdefault(_run_settings(request.config), []).append((i, prompt))
            for config, members in groups.items():                 # 2) one run per settings
                members.sort(key=lambda m: _pool_order(requests[m[0]], m[1], m[0]))
                self._run_group(config, members, requests, outcomes)
            return [o if o is not None else RuntimeError("no outcome") for o in outcomes]

    def prompt_input(self, request: GenerateRequest) -> PromptInput:
        """The call's prompt through the one prompt layer (`eager_eval.pipeline.prompts`)."""
        encoder = PromptEncoder.for_engine(self.engine, self.options.prompt_settings,
                                           think_end=request.config.think_end)
        return encoder.encode(Prompt(request.messages, request.stop, request.config.max_new_tokens),
                              name="of this sample")

    def _run_group(self, config: EagerConfig, members: list[tuple[int, PromptInput]],
                   requests: Sequence[GenerateRequest], outcomes: list[Outcome | None]) -> None:
        labels = [requests[i].label for i, _ in members]
        prompts = [p for _, p in members]
        run_config = config.replace(max_new_tokens=max(p.max_new_tokens or 1 for p in prompts))
        calibration = None
        try:
            if self.auto_theta:
                calibration = self._calibration(config, run_config, prompts)
                run_config = run_config.replace(theta=calibration.theta)
            with self._store(run_config, prompts, labels) as store:
                # the pool's calls are answered when it ends; Inspect's sample count stands
                # still until then (for hours at the paper's scale), so show how far it is
                progress = CounterProgress(len(prompts), self.counter, POOL_COUNTER,
                                           stored=store if store is not None else ())
                result = run(prompts, progress.watch(self.engine.new_backend(run_config)),
                             run_config,
                             verifier=_labels_verifier(labels) if config.mode is Mode.EAGER
                             else None, store=store, on_tree_done=progress.tree_done)
        except Exception as err:  # noqa: BLE001
            if len(members) == 1:
                outcomes[members[0][0]] = err
                return
            logger.warning("eager: a run of %d prompts failed (%s: %s); re-running them one by "
                           "one so that only the failing ones lose their results",
                           len(members), type(err).__name__, err)
            for member in members:
                self._run_group(config, [member], requests, outcomes)
            return
        for pool_index, (i, prompt) in enumerate(members):
            outcomes[i] = CallAnswer(requests[i], prompt, result, pool_index, calibration)

    def _store(self, config: EagerConfig, prompts: Sequence[PromptInput],
               labels: Sequence[Label | None]) -> ContextManager[TreeStore | None]:
        """-M trees=DIR: the pool's tree file, read back and written as trees end."""
        if self.options.trees is None:
            return contextlib.nullcontext()
        engine = self.engine.info() if hasattr(self.engine, "info") else {}
        fingerprint = pool_fingerprint(getattr(self.engine, "name", "model"), engine, config,
                                       prompts, [label and label.target for label in labels])
        return cached_trees(self.options.trees, "inspect", fingerprint, logger)

    def _calibration(self, key: EagerConfig, config: EagerConfig,
                     prompts: Sequence[PromptInput]) -> Calibration:
        """theta=auto for the calls of run settings `key`: measured on the first pool."""
        if key not in self._calibrations:
            self._calibrations[key] = calibrate_theta(self.engine.new_backend,
                                                      [p.tokens for p in prompts], config)
        return self._calibrations[key]


def _pool_order(request: GenerateRequest, prompt: PromptInput, arrival: int) -> tuple:
    """A call's place in its pool: task order (epoch, then the sample's index in the dataset:
    the order the CLI and lm-eval give the same prompts, so seeds and the pool's "remainder to
    the first candidates" agree); calls whose sample's place is unknown after them, by their
    token ids. Arrival order never matters."""
    order = request.label.order if request.label is not None else None
    return (0, order, (), arrival) if order is not None else (1, (0, 0), prompt.tokens, arrival)


def _run_settings(config: EagerConfig) -> EagerConfig:
    """The run-level part of a call's settings: calls that share it share a run (a pool).
    max_new_tokens is per prompt (PromptInput), so it does not split runs; the run's own is the
    largest of its prompts' (what run.settings reports)."""
    return config.replace(max_new_tokens=EagerConfig.max_new_tokens)


def _labels_verifier(labels: Sequence[Label | None]) -> Verifier:
    return labels_verifier([label.target if label else None for label in labels],
                           [label.answer_type if label else AnswerType.MATH for label in labels],
                           n_choices=[label.n_choices if label else 4 for label in labels])


# ----------------------------------------------------------------------------------------------
# The batch window (event loop side)
# ----------------------------------------------------------------------------------------------

R = TypeVar("R")
A = TypeVar("A")


@dataclass
class _Slot(Generic[R, A]):
    request: R
    origin: CallOrigin | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: A | Exception | None = None


@dataclass
class _Batch(Generic[R, A]):
    size: int | None
    """Close at once with this many calls (None: no cap)."""
    eval_id: str | None = None
    """The Inspect eval whose calls this batch gathers (None: calls from outside an eval)."""
    slots: list[_Slot[R, A]] = field(default_factory=list)
    closed: anyio.Event = field(default_factory=anyio.Event)
    last_join: float = 0.0
    """When the latest call joined (anyio time)."""


PoolStateFn = Callable[[str, Collection[str]], PoolState]


class CallBatcher(Generic[R, A]):
    """Gathers concurrent calls into batches (one open batch per eval) and runs each batch in a
    worker thread.

    The first call of a batch leads: it waits until the batch may close, runs the batch off the
    event loop, and hands every call its outcome. A batch closes

    - at once when it holds `size` calls (a pool cap, or all the calls Inspect lets in at once);
    - inside an Inspect eval, when no further call of that eval can come
      (`pool_state(...)` is COMPLETE: every running sample waits in the batch, none is queued),
      or when every running sample has waited `window_s` seconds while Inspect keeps the others
      queued (BLOCKED: they could start only after the batch ran);
    - otherwise (UNKNOWN: a call from outside an eval, or an Inspect without the state)
      `window_s` seconds after its first call.

    The leader's part is shielded from cancellation, so a cancelled leader (a sample time
    limit) never strands the calls that joined its batch.
    """

    POLL_S = 0.05
    """How often a leader looks at the eval's samples while its batch is open."""
    STALL_S = 60.0
    """A batch still OPEN after this long without a new call runs anyway, with a warning:
    running samples that never call mean a limit the provider could not lift (e.g. Inspect's
    adaptive connections holding calls back while the batch holds the connections)."""

    def __init__(self, run_batch: Callable[[list[R]], list[A | Exception]], window_s: float,
                 pool_state: PoolStateFn | None = None) -> None:
        self.run_batch = run_batch
        self.window_s = window_s
        self.pool_state = pool_state
        self._open: dict[str | None, _Batch[R, A]] = {}

    async def submit(self, request: R, size: int | None, origin: CallOrigin | None = None) -> A:
        slot: _Slot[R, A] = _Slot(request, origin)
        key = origin.eval_id if origin is not None else None
        batch = self._open.get(key)
        is_leader = batch is None
        if batch is None:
            batch = self._open[key] = _Batch(size=None if size is None else max(1, size),
                                             eval_id=key)
        batch.slots.append(slot)
        batch.last_join = anyio.current_time()
        if batch.size is not None and len(batch.slots) >= batch.size:
            self._close(batch)
        if is_leader:
            with anyio.CancelScope(shield=True):
                await self._wait_until_closing(batch)
                self._close(batch)
                await self._run(batch)
        await slot.done.wait()
        if isinstance(slot.outcome, Exception):
            raise slot.outcome
        return slot.outcome  # type: ignore[return-value]

    async def _wait_until_closing(self, batch: _Batch[R, A]) -> None:
        if batch.eval_id is None or self.pool_state is None:
            with anyio.move_on_after(self.window_s):
                await batch.closed.wait()
            return
        opened = anyio.current_time()
        blocked_since: float | None = None
        while not batch.closed.is_set():
            waiting = {s.origin.sample for s in batch.slots if s.origin is not None}
            state = self.pool_state(batch.eval_id, waiting)
            now = anyio.current_time()
            if state is PoolState.COMPLETE:
                return
            if state is PoolState.UNKNOWN and now - opened >= self.window_s:
                return
            if state is PoolState.BLOCKED:
                blocked_since = now if blocked_since is None else blocked_since
                if now - blocked_since >= self.window_s:
                    return
            else:
                blocked_since = None
            if state is PoolState.OPEN and now - batch.last_join >= self.STALL_S:
                logger.warning(
                    "eager: %d calls waited %.0f s for samples of their eval that are running "
                    "but do not call; running the pool without them (is --max-connections or "
                    "--adaptive-connections holding calls back?)", len(batch.slots), self.STALL_S)
                return
            with anyio.move_on_after(self.POLL_S):
                await batch.closed.wait()

    def _close(self, batch: _Batch[R, A]) -> None:
        if self._open.get(batch.eval_id) is batch:
            del self._open[batch.eval_id]
        batch.closed.set()

    async def _run(self, batch: _Batch[R, A]) -> None:
        requests = [slot.request for slot in batch.slots]
        try:
            outcomes = await anyio.to_thread.run_sync(self.run_batch, requests)
        except Exception as err:  # noqa: BLE001 (a bug in run_batch: every call learns of it)
            outcomes = [RuntimeError(f"eager batch failed: {type(err).__name__}: {err}")
                        for _ in requests]
        for slot, outcome in zip(batch.slots, outcomes):
            slot.outcome = outcome
            slot.done.set()


# ----------------------------------------------------------------------------------------------
# The provider
# ----------------------------------------------------------------------------------------------


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
        """`engine`: an already loaded Engine (Python only; tests pass a scripted one).
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
            self.options, eager_settings = split_model_args(model_args)
            self.eager_settings, self.auto_theta = split_auto_theta(eager_settings)
            self.base_config = EagerConfig.from_mapping(self.eager_settings)
            if engine is None:
                _check_before_loading(model_name, self.options)
                engine = LazyEngine(lambda: self._load_engine(model_name))
        self.engine = engine
        admit_every_call(config)
        self.worker = BatchWorker(engine, self.options, self.auto_theta)
        self.batcher: CallBatcher[GenerateRequest, CallAnswer] = CallBatcher(
            self.worker.run_batch, self.options.batch_window, pool_state)
        self._warned: set[str] = set()

    def _load_engine(self, model_name: str) -> Engine:
        with log_user_errors(logger):
            engine = load_engine(model_name, backend=self.options.backend,
                                 device=self.options.device, dtype=self.options.dtype,
                                 max_rows=self.options.max_rows,
                                 config=self.base_config,  # vllm: fixes top-K logprobs at start
                                 **dict(self.options.engine_args or {}))
            engine.verify(self.base_config)  # top-K within the vocabulary, the marker encodes
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
        return model_output(self.model_name, answer, self._decode)

    def _decode(self, token_ids: Sequence[int]) -> str:
        """Token ids -> text, for the text around each fork (None-safe for scripted engines)."""
        tokenizer = getattr(self.engine, "tokenizer", None)
        if tokenizer is None:
            return "".join(f"<{t}>" for t in token_ids)
        return tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def pool_cap(self, config: GenerateConfig) -> int | None:
        """Most calls one pool takes: -M batch_size, and never more than Inspect lets in at
        once (its max_connections): a batch holding that many can wait for no other call."""
        caps = [c for c in (self.options.batch_size, config.max_connections) if c]
        return min(caps) if caps else None

    def request_for(self, input: Sequence[ChatMessage], tools: Sequence[ToolInfo],
                    config: GenerateConfig) -> GenerateRequest:
        """Resolve one call (raises for this call only)."""
        if tools:
            raise ValueError("the eager provider does not support tool use: run the task "
                             "without tools (EAGer branches plain generations)")
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
        for generate_name, eager_name in GENERATE_TO_EAGER.items():
            value = getattr(config, generate_name)
            if value is None:
                continue
            if eager_name in self.eager_settings:
                self._warn_override(eager_name, generate_name, value)
                continue
            values[eager_name] = value
        values.update(self.eager_settings)
        return EagerConfig.from_mapping(values)

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


def _check_before_loading(model_name: str, options: ProviderOptions) -> None:
    """What can be checked without the weights, checked when Inspect builds the provider."""
    resolve_model(model_name)
    if options.backend == "hf":
        from eager_eval.engines.models import check_device, dtype_name

        dtype_name(options.dtype)
        check_device(options.device or "cpu")


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


def prompt_record(answer: CallAnswer, decode: Decode | None = None) -> PromptRecord:
    """The call's `record.PromptRecord`: graded when the solver passed the sample's target."""
    from eager_eval.pipeline.outputs import versions

    label = answer.request.label
    origin = {"sample": label.sample_id, "epoch": label.epoch} if label is not None else {}
    record = build_record(
        answer.run, answer.pool_index,
        id=str(label.sample_id) if label is not None and label.sample_id is not None
        else str(answer.pool_index),
        prompt=Prompt(answer.request.messages).text,
        target=label.target if label is not None else None,
        answer_type=label.answer_type if label is not None else None,
        n_choices=label.n_choices if label is not None else 4, decode=decode,
        versions=versions("inspect_ai"), origin=origin)
    if answer.calibration is not None:
        record.calibration = answer.calibration.to_dict()
    return record


def model_output(model_name: str, answer: CallAnswer, decode: Decode | None = None) -> ModelOutput:
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
    input_tokens = len(answer.prompt.tokens)
    return ModelOutput(
        model=model_name,
        choices=choices,
        usage=ModelUsage(input_tokens=input_tokens, output_tokens=result.tokens_generated,
                         total_tokens=input_tokens + result.tokens_generated),
        time=answer.run.wall_seconds,
        metadata=prompt_record(answer, decode).to_dict(),
    )
