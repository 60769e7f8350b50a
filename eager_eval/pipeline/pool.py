"""run_pool: the one run pipeline every front end calls.

A budget pool is the prompts one `runner.run()` spans (a task, an lm-eval task group, an
Inspect eval's samples x epochs): Algorithm 2 reallocates unspent sequences among them. Every
front end turns its harness's requests into `PoolPrompt`s (`pool_prompt`: the one prompt
layer), calls `run_pool`, and turns the `PoolOutcome` back into its harness's results:

    PoolPrompt ... ─> run_pool: 1) labels -> verifier (full EAGer)
                                2) theta=auto -> calibration (a warm-up on these prompts)
                                3) tree store (resume / trees=DIR), one fingerprint
                                4) progress (the front end's display)
                                5) runner.run()
                                6) one PromptRecord per prompt, graded once
                    ─> PoolOutcome (settings that ran, RunResult, records, calibration)

Nothing here knows a harness: the front ends pass their names (`harness` for the versions
recorded, `origin` per prompt) and their displays (`progress`).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from eager_eval.core.config import ConfigError, EagerConfig, Mode
from eager_eval.core.results import RunResult, TreeResult
from eager_eval.core.runner import Consensus, run
from eager_eval.core.tree import PromptInput
from eager_eval.engines.registry import Engine, EngineOptions
from eager_eval.pipeline.answers import AnswerType, labels_verifier
from eager_eval.pipeline.calibration import Calibration, calibrate_on_engine, calibrate_theta
from eager_eval.pipeline.progress import RunCounts
from eager_eval.pipeline.prompts import Prompt, PromptEncoder, PromptSettings
from eager_eval.pipeline.record import PromptRecord, build_record
from eager_eval.pipeline.store import TreeFiles, pool_fingerprint

logger = logging.getLogger("eager_eval")


@dataclass(frozen=True)
class Label:
    """A prompt's gold answer: what full EAGer's verifier and the record's grades read."""

    target: str
    answer_type: AnswerType
    n_choices: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", str(self.target))
        object.__setattr__(self, "answer_type", AnswerType(self.answer_type))


@dataclass(frozen=True)
class PoolPrompt:
    """One prompt of a pool as a front end hands it over: the prompt, its token ids, its name
    in the source, its label (if the task has one) and where the front end placed it."""

    prompt: Prompt
    input: PromptInput
    """The runner's input (`pool_prompt` encodes it through the prompt layer)."""
    id: str
    label: Label | None = None
    answer_type: AnswerType | None = None
    """How an unlabelled prompt's answers are extracted for its majority vote (default math)."""
    origin: Mapping[str, Any] = field(default_factory=dict)
    """lm-eval {task, doc_id, slots}; Inspect {sample, epoch}; the CLI none."""
    text: str | None = None
    """The prompt's own words for the record (default: `prompt.text`)."""


def pool_prompt(encoder: PromptEncoder, prompt: Prompt, id: str, *, label: Label | None = None,
                name: str | None = None, **fields: Any) -> PoolPrompt:
    """Encode `prompt` (a UserError when it fills the model's context) into a PoolPrompt."""
    return PoolPrompt(prompt, encoder.encode(prompt, name=name or repr(id)), str(id), label,
                      **fields)


ProgressFactory = Callable[[str, int, Sequence[TreeResult]], RunCounts]
"""(pool name, prompts, trees read back from the store) -> the front end's display of a run."""


@dataclass(frozen=True)
class Pool:
    """One budget pool: what to run, and what its trees depend on (the store's fingerprint)."""

    name: str
    """The task, 'lm_eval-<task>', 'inspect': names its tree file under trees=DIR."""
    prompts: Sequence[PoolPrompt]
    config: EagerConfig
    """The settings; theta may still be `auto` (calibrated by run_pool)."""
    model: str
    engine: EngineOptions
    prompt_settings: PromptSettings
    label_hint: str = "give the task its labels"
    """How a user of this front end gives full EAGer its labels (said when some are missing)."""

    def fingerprint(self, config: EagerConfig) -> dict[str, Any]:
        """What the pool's trees depend on, with `config` the settings that run."""
        return pool_fingerprint(self.model, self.engine, self.prompt_settings, config,
                                [p.prompt for p in self.prompts], labels_of(self.prompts))


@dataclass
class PoolOutcome:
    """What one pool produced, for the front end to hand back to its harness."""

    name: str
    config: EagerConfig
    """The settings that ran: theta=auto replaced by the calibrated value."""
    prompts: list[PoolPrompt]
    result: RunResult
    records: list[PromptRecord]
    """One per prompt, in pool order; graded where the prompt had a label."""
    calibration: Calibration | None = None
    resumed_trees: int = 0
    """Trees read back from the store, not generated by this process."""


def labels_of(prompts: Sequence[PoolPrompt]) -> list[str | None]:
    """Each prompt's target (None where it has none): part of full EAGer's fingerprint."""
    return [p.label.target if p.label is not None else None for p in prompts]


def verifier_for(config: EagerConfig, prompts: Sequence[PoolPrompt], name: str,
                 hint: str = "give the task its labels"):
    """Full EAGer grades while it runs (its later rounds go to unsolved prompts): every prompt
    needs a label. Other modes read none."""
    if config.mode is not Mode.EAGER:
        return None
    missing = sum(p.label is None for p in prompts)
    if missing:
        raise ConfigError("mode", Mode.EAGER.value, "", message=(
            f"mode=eager (full EAGer) needs a gold answer and an answer type for every prompt, "
            f"but {missing} of {len(prompts)} prompts of {name} have none: {hint}; without "
            f"labels use mode=eager_adapt"))
    labels = [p.label for p in prompts]
    return labels_verifier([lb.target for lb in labels], [lb.answer_type for lb in labels],
                           n_choices=[lb.n_choices for lb in labels])


def consensus_for(config: EagerConfig, prompts: Sequence[PoolPrompt]) -> Consensus | None:
    """deepconf_consensus's test: the share of the weighted vote the leading answer of a
    prompt's finished sequences holds (`metrics.consensus_share`), answers extracted as the
    record's grades extract them (each text once). None when the run has no consensus stop."""
    if config.mode is not Mode.DEEPCONF or config.deepconf_consensus is None:
        return None
    from eager_eval.pipeline.answers import extract_answer, same_answer
    from eager_eval.pipeline.metrics import answer_classes, consensus_share

    kinds = [_answer_type(p) for p in prompts]
    extracted: dict[tuple[int, str], str | None] = {}

    def share(prompt_idx: int, votes: Sequence[tuple[str, float]]) -> float:
        kind, n_choices = kinds[prompt_idx]
        answers = []
        for text, _ in votes:
            key = (prompt_idx, text)
            if key not in extracted:
                extracted[key] = extract_answer(text, kind, n_choices=n_choices)
            answers.append(extracted[key])
        classes = answer_classes(answers, lambda a, b: same_answer(a, b, kind))
        return consensus_share(classes, [weight for _, weight in votes])

    return share


def _answer_type(prompt: PoolPrompt) -> tuple[AnswerType, int]:
    if prompt.label is not None:
        return prompt.label.answer_type, prompt.label.n_choices
    return prompt.answer_type or AnswerType.MATH, 4


def calibrate(engine: Engine, config: EagerConfig, prompts: Sequence[PoolPrompt],
              calibration: Calibration | None = None,
              warn: Callable[[str], None] | None = None) -> tuple[EagerConfig, Calibration | None]:
    """theta=auto: the config with the measured theta (or `calibration`'s, when a front end
    already has one for these settings); any other config as it is. A theta measured on too
    few entropies (`Calibration.caution`) is said through `warn` (default: the log)."""
    if not config.theta_is_auto:
        return config, None
    if calibration is None:
        tokens = [p.input.tokens for p in prompts]
        on_replica = getattr(engine, "on_replica", None)  # replicas: the warm-up runs on one
        calibration = (on_replica(calibrate_on_engine, tokens, config) if on_replica is not None
                       else calibrate_theta(engine.new_backend, tokens, config))
        if calibration.caution is not None:
            (warn or logger.warning)(calibration.caution)
    return config.replace(theta=calibration.theta), calibration


def run_pool(
    pool: Pool,
    engine: Engine,
    *,
    trees: TreeFiles | None = None,
    progress: ProgressFactory | None = None,
    calibration: Calibration | None = None,
    harness: str | None = None,
) -> PoolOutcome:
    """Run one budget pool on `engine`; see the module docstring.

    `trees`: where the pool's finished trees are kept (`store.RunTrees`: the CLI's run
    directory; `store.TreesDir`: trees=DIR), read back by a rerun under the same fingerprint
    and written as each ends. `progress`: the front end's display. `calibration`: theta=auto's
    value already measured for these settings. `harness`: whose version the records carry
    beside ours (lm_eval, inspect_ai).
    """
    from eager_eval.pipeline.versions import versions

    name, prompts, config = pool.name, list(pool.prompts), pool.config
    if not prompts:
        raise ValueError(f"pool {name!r} has no prompts")
    verifier = verifier_for(config, prompts, name, pool.label_hint)
    run_config, calibration = calibrate(engine, config, prompts, calibration)
    decode = _decoder(engine)
    inputs = [p.input for p in prompts]
    opened = (trees.open(name, pool.fingerprint(run_config)) if trees is not None
              else contextlib.nullcontext())
    with opened as store:
        stored = list(store) if store is not None else []
        backend, on_tree_done = engine.new_backend(run_config), None
        if progress is not None:
            counts = progress(name, len(prompts), stored)
            backend, on_tree_done = counts.watch(backend), counts.tree_done
        result = run(inputs, backend, run_config, verifier=verifier, store=store,
                     on_tree_done=on_tree_done, consensus=consensus_for(run_config, prompts))
    known = versions(*([harness] if harness else []))
    records = [_record(result, i, p, decode, known, calibration) for i, p in enumerate(prompts)]
    return PoolOutcome(name, run_config, prompts, result, records, calibration,
                       resumed_trees=len(stored))


def _record(result: RunResult, index: int, prompt: PoolPrompt, decode: Any,
            versions: Mapping[str, Any], calibration: Calibration | None) -> PromptRecord:
    label = prompt.label
    record = build_record(
        result, index, id=prompt.id, prompt=prompt.text if prompt.text is not None else prompt.prompt.text,
        target=label.target if label is not None else None,
        answer_type=label.answer_type if label is not None else None,
        n_choices=label.n_choices if label is not None else 4, decode=decode,
        versions=versions, origin=prompt.origin)
    if calibration is not None:
        record.calibration = calibration.to_dict()
    if not record.is_graded:  # no label: still each answer and the majority vote
        record.vote((prompt.answer_type or AnswerType.MATH).value)
    return record


def _decoder(engine: Engine) -> Callable[[Sequence[int]], str]:
    """The tokenizer's decode (special tokens dropped): the text around each fork."""
    tokenizer = engine.tokenizer
    return lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)


__all__ = ["Label", "PoolPrompt", "pool_prompt", "Pool", "PoolOutcome", "ProgressFactory",
           "labels_of", "verifier_for", "consensus_for", "calibrate", "run_pool"]
