"""EagerConfig: every knob of the method (METHOD.md), validated once, shared by all front ends.

Front ends (CLI, lm-eval model_args, Inspect -M, sweep configs) expose exactly these field
names, so a setting means the same thing everywhere; the sampling fields are inherited from
`sampling.SamplingSettings`, declared there once. Self-contained range checks happen at
construction; checks that need the model (vocabulary size, tokenizer) wait for
`verify_model`, which every engine runs when it makes a backend.

`theta` may be `auto` (THETA_AUTO): measured on the task's prompts before the run
(`pipeline/calibration.py`), which replaces it with the number; the runner refuses a config
whose theta is still `auto`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import InitVar, dataclass
from enum import Enum
from typing import Any, Mapping

from eager_eval.common.settings import (
    RENAMED,
    int_at_least,
    is_number,
    parse_value,
    renamed_settings,
    unknown_setting_error,
)
from eager_eval.core.confidence import ConfidenceMeasure
from eager_eval.core.seeds import MAX_SEED
from eager_eval.core.sampling import (
    NOT_A_SETTING,
    ConfigError,
    EntropySource,
    SamplingSettings,
    as_enum,
    setting_fields,
)

THETA_AUTO = "auto"
"""The theta every front end accepts for a threshold calibrated on the task (docs/THETA.md)."""


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == THETA_AUTO


class Mode(str, Enum):
    """Which generation method the runner applies to a task's prompts."""

    FULL_PARALLEL = "full_parallel"
    """M independent samples per prompt (the baseline), through the same engine."""
    EAGER_INIT = "eager_init"
    """Algorithm 1 alone: one trace per prompt, forks on high entropy, at most M each."""
    EAGER_ADAPT = "eager_adapt"
    """Algorithm 1, then the unspent budget goes to prompts that hit M (no labels needed)."""
    EAGER = "eager"
    """Algorithm 1, then the unspent budget goes to prompts with no correct sequence (labels)."""
    DEEPCONF = "deepconf"
    """DeepConf online (Fu et al. 2025): per prompt, `deepconf_warmup` sequences set a stop bar
    from their lowest group confidences; the other M - warm-up stop once their group
    confidence falls below it (docs/CONFIDENCE.md)."""


NON_BRANCHING = (Mode.FULL_PARALLEL, Mode.DEEPCONF)
"""The modes that never fork (no theta); `in` matches their names too ("deepconf")."""


class BranchPolicy(str, Enum):
    """What the two sequences of a fork continue with at the fork position."""

    TOP2 = "top2"
    """Parent takes the rank-1 token, the child the rank-2 token (the reference code)."""
    SAMPLE = "sample"
    """Parent keeps its sampled token; the child samples on its own seed from the same step."""


@dataclass(frozen=True)
class EagerConfig(SamplingSettings):
    """Settings of one EAGer run. Defaults are the paper's (METHOD.md sections 2-4, 6).

    The sampling fields (temperature, top_p, top_k, min_p, entropy_k, entropy_source) are
    `SamplingSettings`'; the fields below are the method's."""

    mode: Mode = Mode.EAGER_ADAPT
    """full_parallel | eager_init | eager_adapt | eager (full EAGer needs a verifier/labels)."""
    theta: float | str = 2.0
    """Entropy threshold in nats (> 0; +inf never branches). The paper uses about 2.0-2.5.
    `auto`: calibrated on the task's prompts before the run (docs/THETA.md)."""
    max_seqs: int = 32
    """M: sequences per prompt in EAGer-init and in Full Parallel; the budget is M * N."""
    percentile: float | None = 99.0
    """Dynamic threshold: tau = max(theta, this percentile of earlier entropies); None = theta."""
    window: int = 1000
    """No-branch window W: after W positions without a granted fork, branching ends."""
    think_end: str | None = "</think>"
    """End-of-thinking marker: a sequence never branches after it. None for non-thinking models."""
    branch_policy: BranchPolicy = BranchPolicy.TOP2
    max_new_tokens: int = 32768
    seed: int = 0
    adapt_cap: int = 3
    """EAGer-adapt: a prompt holds at most adapt_cap * M sequences over all rounds."""
    adapt_full_theta_retries: int = 2
    """EAGer-adapt schedule: the first this-many retries of a prompt use theta ..."""
    adapt_theta_factor: float = 0.9
    """... later retries use theta * this factor (reference: 0.9)."""
    eager_theta_decay: float = 0.8
    """Full EAGer: a prompt that stayed under M retries with theta * decay**attempt."""
    max_rounds: int | None = None
    """Upper bound on reallocation rounds; None = until the budget or the candidates run out."""
    confidence_window: int = 2048
    """w: tokens per group of the group confidences (sliding windows) and of the tail
    confidence; a shorter sequence is one group (the paper's 2,048). docs/CONFIDENCE.md."""
    confidence_measure: ConfidenceMeasure = ConfidenceMeasure.BOTTOM_10
    """Which confidence weighs the confidence-aware votes: mean, tail, lowest_group or
    bottom_10 (the reference's filtered vote). Scoring only: it never changes a tree."""
    deepconf_warmup: int = 16
    """deepconf: warm-up sequences per prompt (the paper's 16); the other M - warm-up may stop
    early. Must leave budget: < max_seqs."""
    deepconf_percentile: float = 90.0
    """deepconf (and confidence_stop): the stop bar is this percentile of the warm-up
    sequences' lowest group confidences, in (0, 100): 90 keeps about the top 10% (the paper's
    DeepConf-low, the reference script's 90), 10 the top 90% (DeepConf-high)."""
    deepconf_consensus: float | None = None
    """deepconf: stop a prompt's live sequences once the confidence-weighted vote of its
    finished ones gives one answer at least this share, in (0, 1] (the paper's tau = 0.95);
    None = off, as in the reference script."""
    confidence_stop: bool = False
    """eager_adapt / eager: a reallocation round's sequence stops once its group confidence
    falls below its prompt's bar (deepconf_percentile of its EAGer-init sequences' lowest group
    confidences), and its sequence goes back to the budget pool. docs/CONFIDENCE.md."""
    topk: InitVar[int | None] = None
    """The old name of `entropy_k`: EagerConfig(topk=5) still works, with a DeprecationWarning
    (settings.RENAMED); never stored."""

    def __post_init__(self, topk: int | None = None) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if topk is not None:
            set_("entropy_k", renamed_settings({"topk": topk}, "EagerConfig field")["entropy_k"])
        super().__post_init__()  # the sampling checks
        set_("mode", as_enum(Mode, "mode", self.mode))
        set_("logprobs", self.is_branching)  # a run that never branches reads no top-K
        set_("branch_policy", as_enum(BranchPolicy, "branch_policy", self.branch_policy))
        if is_auto(self.theta):
            set_("theta", THETA_AUTO)
        elif not is_number(self.theta) or math.isnan(self.theta) or self.theta <= 0:
            raise ConfigError("theta", self.theta, "a number of nats > 0 (use inf to never "
                              "branch), or auto (calibrated on the task)")
        else:
            set_("theta", float(self.theta))
        self._check_int("max_seqs", 1)
        if self.percentile is not None:
            if not is_number(self.percentile) or not (0 < self.percentile <= 100):
                raise ConfigError("percentile", self.percentile, "in (0, 100], or None for a fixed theta")
            set_("percentile", float(self.percentile))
        self._check_int("window", 1)
        if self.think_end is not None and (not isinstance(self.think_end, str) or not self.think_end):
            raise ConfigError("think_end", self.think_end, "a non-empty string, or None")
        self._check_int("max_new_tokens", 1)
        self._check_int("seed", 0)
        if self.seed > MAX_SEED:
            raise ConfigError("seed", self.seed, f"an integer in [0, 2**63 - 1 = {MAX_SEED}] (a "
                              "larger one would silently run as another seed)")
        self._check_int("adapt_cap", 1)
        self._check_int("adapt_full_theta_retries", 0)
        for name in ("adapt_theta_factor", "eager_theta_decay"):
            value = getattr(self, name)
            if not is_number(value) or not (0 < value <= 1):
                raise ConfigError(name, value, "in (0, 1]")
        if self.max_rounds is not None:
            self._check_int("max_rounds", 0)
        self._check_confidence()

    def _check_confidence(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        self._check_int("confidence_window", 1)
        set_("confidence_measure", as_enum(ConfidenceMeasure, "confidence_measure",
                                           self.confidence_measure))
        self._check_int("deepconf_warmup", 1)
        q = self.deepconf_percentile
        if not is_number(q) or not (0 < q < 100):
            raise ConfigError("deepconf_percentile", q, "in (0, 100): 90 keeps about the top 10% "
                              "of sequences (DeepConf-low), 10 the top 90% (DeepConf-high)")
        set_("deepconf_percentile", float(q))
        tau = self.deepconf_consensus
        if tau is not None:
            if not is_number(tau) or not (0 < tau <= 1):
                raise ConfigError("deepconf_consensus", tau, "in (0, 1] (the paper's 0.95), or "
                                  "none (off)")
            set_("deepconf_consensus", float(tau))
        if not isinstance(self.confidence_stop, bool):
            raise ConfigError("confidence_stop", self.confidence_stop, "true or false")
        if self.confidence_stop and self.mode not in (Mode.EAGER_ADAPT, Mode.EAGER):
            raise ConfigError("confidence_stop", True, "", message=(
                f"confidence_stop applies to the reallocation rounds of eager_adapt and eager, "
                f"not to mode {self.mode.value} (deepconf always stops; use mode=deepconf)"))
        if self.stops_on_confidence and not self.confidence:
            what = "mode deepconf" if self.mode is Mode.DEEPCONF else "confidence_stop"
            raise ConfigError("confidence_k", self.confidence_k, f"an integer >= 1 (or none: "
                              f"entropy_k) with {what} (its stop reads the token confidence)")
        if self.mode is Mode.DEEPCONF and self.deepconf_warmup >= self.max_seqs:
            raise ConfigError("deepconf_warmup", self.deepconf_warmup, "", message=(
                f"deepconf_warmup={self.deepconf_warmup} leaves no budget: with "
                f"max_seqs={self.max_seqs} sequences per prompt, the warm-up must be smaller "
                f"(e.g. deepconf_warmup={max(1, self.max_seqs // 2)}), or raise max_seqs"))

    def _check_int(self, name: str, minimum: int) -> None:
        object.__setattr__(self, name, int_at_least(getattr(self, name), name, minimum))

    @property
    def is_branching(self) -> bool:
        return self.mode not in NON_BRANCHING

    @property
    def stops_on_confidence(self) -> bool:
        """Some sequences stop once their group confidence falls below a bar."""
        return self.mode is Mode.DEEPCONF or self.confidence_stop

    @property
    def theta_is_auto(self) -> bool:
        """theta=auto: the pipeline calibrates it before the run (`with_theta`)."""
        return self.theta == THETA_AUTO

    def budget(self, n_prompts: int) -> int:
        """M * N: the sequences a task of `n_prompts` prompts may spend (METHOD.md section 4)."""
        return total_budget(self.max_seqs, n_prompts)

    def replace(self, **changes: Any) -> "EagerConfig":
        return dataclasses.replace(self, **renamed_settings(changes, "EagerConfig field"))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready settings (enums as their values, inf as the string 'inf')."""
        out: dict[str, Any] = {}
        for f in setting_fields(type(self)):
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, float) and math.isinf(value):
                value = "inf"
            elif f.name == "confidence_k":
                value = self.resolved_confidence_k  # what ran: None means entropy_k's value
            out[f.name] = value
        return out

    @classmethod
    def field_names(cls) -> frozenset[str]:
        """The settings a user gives (every front end's names)."""
        return frozenset(f.name for f in setting_fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, strict: bool = True) -> "EagerConfig":
        """Build from front-end strings/values ('inf', 'none', '0.6', 'auto', ...).

        With strict=True an unknown key is an error that lists the accepted names.
        """
        known = cls.field_names()
        values = renamed_settings(values)
        unknown = sorted(set(values) - known)
        if strict and unknown:
            raise unknown_setting_error(unknown[0], known)
        for name, value in values.items():
            if name in known and isinstance(value, str) and not value.strip():
                raise ConfigError(name, value, "", message=(
                    f"{name} is empty ({value!r}); give a value, or none where that is meant"
                    + (" (think_end=none: a model without thinking)" if name == "think_end"
                       else "")))
        kwargs = {k: parse_value(v) for k, v in values.items() if k in known}
        return cls(**kwargs)

    def verify_think_end(self, encode: Any) -> None:
        """Checks needing the tokenizer: the end-of-thinking marker must encode to tokens."""
        if self.think_end is not None and not encode(self.think_end):
            raise ConfigError("think_end", self.think_end, "a marker the tokenizer can encode")

    def verify_model(self, *, vocab_size: int | None, encode: Any = None) -> None:
        """Checks needing the model (the second stage of validation, as vLLM's
        `SamplingParams.verify`): K of the entropy, k of the confidence and the sampling top_k
        must fit its
        vocabulary (a larger K was silently clamped, recording a K that never ran; a larger
        top_k failed inside torch), and the end-of-thinking marker must encode."""
        if vocab_size is not None:
            if self.entropy_k > vocab_size:
                raise ConfigError("entropy_k", self.entropy_k, f"<= the model's vocabulary size "
                                  f"({vocab_size} tokens): K of the top-K entropy")
            if self.resolved_confidence_k > vocab_size:
                raise ConfigError("confidence_k", self.confidence_k, f"0 (off) or <= the "
                                  f"model's vocabulary size ({vocab_size} tokens): k of the "
                                  "token confidence")
            if self.top_k > vocab_size:
                raise ConfigError("top_k", self.top_k, f"0 (off) or <= the model's vocabulary "
                                  f"size ({vocab_size} tokens)")
        if encode is not None:
            self.verify_think_end(encode)


def total_budget(max_seqs: int, n_prompts: int) -> int:
    """M * N, the budget of a task: the one place it is computed (budget pool, front ends'
    statistics, the report's words)."""
    return int(max_seqs) * int(n_prompts)


SCORING_SETTINGS = frozenset({"confidence_measure"})
"""Settings that change only how the outputs are scored, never a tree: left out of the tree
stores' fingerprints (a resume under another one is the same generation)."""

__all__ = ["THETA_AUTO", "is_auto", "Mode", "BranchPolicy", "EntropySource", "ConfigError",
           "ConfidenceMeasure", "SCORING_SETTINGS",
           "EagerConfig", "total_budget", "NOT_A_SETTING", "RENAMED"]
