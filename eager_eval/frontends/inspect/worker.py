"""The provider's worker side: a batch of generate() calls -> budget pools -> one answer each.

Runs in a worker thread, one batch at a time (one engine, one run). Each call is prepared
alone (a call that cannot be encoded fails alone), calls of the same run settings form one
pool, ordered as the CLI and lm-eval order the same prompts, and each pool goes through the
one pipeline (`pipeline.pool.run_pool`). If a pool of several prompts raises, its prompts
are re-run one by one, so one bad prompt costs only its own sample.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import anyio

from eager_eval.core.config import ConfigError, EagerConfig
from eager_eval.core.results import PromptResult, RunResult
from eager_eval.engines.registry import Engine, EngineOptions
from eager_eval.pipeline.answers import AnswerType
from eager_eval.pipeline.calibration import Calibration
from eager_eval.pipeline import pool as pipeline
from eager_eval.common.errors import UserError, log_user_errors
from eager_eval.pipeline.pool import Pool, PoolPrompt, pool_prompt, run_pool
from eager_eval.pipeline.progress import CounterProgress
from eager_eval.pipeline.prompts import Prompt, PromptEncoder, PromptSettings
from eager_eval.pipeline.record import PromptRecord
from eager_eval.pipeline.store import TreeFiles

logger = logging.getLogger("eager_eval.frontends.inspect")

LABEL_KEY = "eager_eval_label"
"""Key in GenerateConfig.extra_body under which a solver passes the sample's `Label`."""

LABEL_HINT = ("generate with the eager_generate() solver (eager_eval.frontends.inspect.scorers; "
              "the tasks in tasks/ use it)")
"""How an Inspect user gives full EAGer its labels."""


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

    @property
    def gold(self) -> pipeline.Label:
        return pipeline.Label(self.target, self.answer_type, self.n_choices)


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
    """One call's share of a pool: its request, its prompt, the pool's run and its record."""

    request: GenerateRequest
    prompt: PoolPrompt
    run: RunResult
    pool_index: int
    """Index of this call's prompt in `run.prompts`."""
    record: PromptRecord
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


@dataclass(frozen=True)
class Target:
    """What the worker's pools run on and record: the model's name, engine options, prompts."""

    model: str
    engine: EngineOptions
    prompts: PromptSettings
    trees: TreeFiles | None = None


class BatchWorker:
    """Runs batches of requests on one engine, one batch at a time (called in a worker thread)."""

    def __init__(self, engine: Engine, target: Target, counter: Counter = inspect_counter) -> None:
        """`counter`: where each pool's progress is shown (Inspect's display)."""
        self.engine = engine
        self.target = target
        self.counter = counter
        self._calibrations: dict[EagerConfig, Calibration] = {}
        """theta=auto, per run settings: measured on the first pool, reused by the later ones,
        so one task has one theta."""
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        """User errors already logged as their one clear line (once, not per call)."""

    def run_batch(self, requests: Sequence[GenerateRequest]) -> list[Outcome]:
        """One outcome per request, in order: a CallAnswer, or the exception that call raises."""
        with self._lock:
            outcomes: list[Outcome | None] = [None] * len(requests)
            groups: dict[EagerConfig, list[tuple[int, PoolPrompt]]] = {}
            for i, request in enumerate(requests):                 # 1) encode, per call
                try:
                    prompt = self.pool_prompt(request, i)
                except Exception as err:  # noqa: BLE001 (the call fails alone)
                    outcomes[i] = err
                    continue
                groups.setdefault(run_settings(request.config), []).append((i, prompt))
            for config, members in groups.items():                 # 2) one pool per settings
                members.sort(key=lambda m: pool_order(requests[m[0]], m[1], m[0]))
                self._run_group(config, members, requests, outcomes)
            return [o if o is not None else RuntimeError("no outcome") for o in outcomes]

    def pool_prompt(self, request: GenerateRequest, arrival: int) -> PoolPrompt:
        """The call's prompt through the one prompt layer (`pipeline.prompts`)."""
        encoder = PromptEncoder.for_engine(self.engine, self.target.prompts,
                                           think_end=request.config.think_end)
        label = request.label
        return pool_prompt(
            encoder, Prompt(request.messages, request.stop, request.config.max_new_tokens),
            str(label.sample_id) if label is not None and label.sample_id is not None
            else str(arrival), label=label.gold if label is not None else None,
            name="of this sample",
            origin={"sample": label.sample_id, "epoch": label.epoch} if label is not None else {})

    def _run_group(self, config: EagerConfig, members: list[tuple[int, PoolPrompt]],
                   requests: Sequence[GenerateRequest], outcomes: list[Outcome | None]) -> None:
        prompts = [_with_pool_id(p, i, requests[i]) for i, (_, p) in enumerate(members)]
        run_config = config.replace(max_new_tokens=max(p.input.max_new_tokens or 1
                                                       for p in prompts))
        pool = Pool("inspect", prompts, run_config, self.target.model, self.target.engine,
                    self.target.prompts, label_hint=LABEL_HINT)
        try:
            # the pool's calls are answered when it ends; Inspect's sample count stands still
            # until then (for hours at the paper's scale), so show how far it is
            with log_user_errors(logger, self._logged):  # each line once, for all the calls
                outcome = run_pool(
                    pool, self.engine, trees=self.target.trees, harness="inspect_ai",
                    calibration=self._calibrations.get(config),
                    progress=lambda name, n, stored: CounterProgress(
                        n, self.counter, POOL_COUNTER, stored=stored))
        except Exception as err:  # noqa: BLE001
            # a user error (the pool's input or its disk) is every call's alike
            if len(members) == 1 or isinstance(err, UserError):
                for i, _ in members:
                    outcomes[i] = err
                return
            logger.warning("eager: a run of %d prompts failed (%s: %s); re-running them one by "
                           "one so that only the failing ones lose their results",
                           len(members), type(err).__name__, err)
            for member in members:
                self._run_group(config, [member], requests, outcomes)
            return
        if outcome.calibration is not None:
            self._calibrations.setdefault(config, outcome.calibration)
        for pool_index, (i, prompt) in enumerate(members):
            outcomes[i] = CallAnswer(requests[i], outcome.prompts[pool_index], outcome.result,
                                     pool_index, outcome.records[pool_index], outcome.calibration)


def _with_pool_id(prompt: PoolPrompt, pool_index: int, request: GenerateRequest) -> PoolPrompt:
    """A call without a sample id is named by its place in the pool (its record's id)."""
    if request.label is not None and request.label.sample_id is not None:
        return prompt
    from dataclasses import replace

    return replace(prompt, id=str(pool_index))


def pool_order(request: GenerateRequest, prompt: PoolPrompt, arrival: int) -> tuple:
    """A call's place in its pool: task order (epoch, then the sample's index in the dataset:
    the order the CLI and lm-eval give the same prompts, so seeds and the pool's "remainder to
    the first candidates" agree); calls whose sample's place is unknown after them, by their
    token ids. Arrival order never matters."""
    order = request.label.order if request.label is not None else None
    return ((0, order, (), arrival) if order is not None
            else (1, (0, 0), prompt.input.tokens, arrival))


def run_settings(config: EagerConfig) -> EagerConfig:
    """The run-level part of a call's settings: calls that share it share a run (a pool).
    max_new_tokens is per prompt (PromptInput), so it does not split runs; the run's own is the
    largest of its prompts' (what run.settings reports)."""
    return config.replace(max_new_tokens=EagerConfig.max_new_tokens)


__all__ = ["LABEL_KEY", "Label", "GenerateRequest", "CallAnswer", "Outcome", "Counter",
           "POOL_COUNTER", "inspect_counter", "Target", "BatchWorker", "pool_order",
           "run_settings"]
