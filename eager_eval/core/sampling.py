"""SamplingSettings: how every sequence samples and what top-K it reports, validated once.

This dataclass is the one place a sampling setting is declared: `EagerConfig` inherits its
fields, so every front end (CLI flags, lm-eval model args, Inspect -M, sweep configs) offers a
new field here without a change of its own, and every backend receives this object
(`EagerConfig.sampling`). Construction checks what needs no model, in the way of vLLM's
`SamplingParams`; what needs the model (the vocabulary size) waits for
`EagerConfig.verify_model`. docs/ARCHITECTURE.md has the recipe for adding a setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from eager_eval.common.settings import SettingError, int_at_least, is_number

ConfigError = SettingError
"""A setting is out of range; the message names the setting, the value and the fix (one class
with `settings.SettingError`, so every front end's parser raises the same error)."""

MIN_TEMPERATURE = 0.01
"""The smallest temperature other than 0 (greedy). Below it the logits divided by it overflow
(float16 near 1e-3, float32 and the CPU's float64 for denormals such as 1e-310: inf - inf is NaN,
and NaN probabilities sample garbage), and vLLM raises any temperature under 0.01 to 0.01 on its
own, so the run would not be the one recorded. Refused, with the fix: 0 for greedy decoding."""

NOT_A_SETTING = {"setting": False}
"""Field metadata: derived by the run, never given by a user (not a flag, model arg or -M)."""


class EntropySource(str, Enum):
    RAW = "raw"
    """Entropy of the model's distribution before temperature/top-p (reference, vLLM default)."""
    PROCESSED = "processed"
    """Entropy of the distribution actually sampled from (after temperature, top-k, top-p)."""


def as_enum(enum_cls: type[Enum], name: str, value: Any) -> Enum:
    """`value` as a member of `enum_cls` (by its text, any case), else a ConfigError."""
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(str(value).strip().lower())
    except ValueError:
        options = ", ".join(m.value for m in enum_cls)
        raise ConfigError(name, value, f"one of: {options}") from None


@dataclass(frozen=True)
class SamplingSettings:
    """What every sequence of a run samples with, and the top-K it reports."""

    entropy_k: int = 20
    """K of the top-K entropy (the reference reads 20 logprobs). Not sampling's `top_k`; it was
    called `topk` before, which every front end still accepts (with a DeprecationWarning)."""
    temperature: float = 0.6
    """0 = greedy. Finite: an infinite temperature samples uniformly over the vocabulary."""
    top_p: float = 1.0
    top_k: int = 0
    """0 = off. Passed explicitly to every engine (HF generate would otherwise default to 50)."""
    entropy_source: EntropySource = EntropySource.RAW
    """raw: logprobs before temperature/top-k/top-p (the reference); processed: of the
    distribution sampled from."""
    min_p: float = 0.0
    """0 = off. Drop tokens whose probability is below min_p x the top token's (after
    temperature), as transformers' MinPLogitsWarper and vLLM's min_p do."""
    confidence_k: int | None = None
    """k of DeepConf's token confidence, C = -(1/k) x the sum of the k largest log-probabilities
    (from the distribution the entropy is read from). None: entropy_k (20 by default, the
    paper's k; then it costs no extra log-probabilities). 0 = off: no confidence recorded, and a
    run that never branches asks the engine for no logprobs at all. docs/CONFIDENCE.md."""
    logprobs: bool = field(default=True, metadata=NOT_A_SETTING)
    """Report the top-K ids and log-probabilities. False only for runs that never branch
    (full_parallel, deepconf): nothing reads them there, and on a GPU they cost a top-K over the
    vocabulary per row per step. The confidence (`confidence_k`) is reported either way."""

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("entropy_source", as_enum(EntropySource, "entropy_source", self.entropy_source))
        set_("entropy_k", int_at_least(self.entropy_k, "entropy_k", 2))
        t = self.temperature
        if not is_number(t) or not math.isfinite(t) or t < 0:
            raise ConfigError("temperature", t, "a finite number >= 0 (0 = greedy)")
        if 0 < t < MIN_TEMPERATURE:
            raise ConfigError("temperature", t, "", message=(
                f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {t!r}: "
                "below that the logits divided by it overflow to NaN (and vLLM raises it to "
                f"{MIN_TEMPERATURE:g} on its own); use 0 for greedy decoding"))
        if not is_number(self.top_p) or not (0 < self.top_p <= 1):
            raise ConfigError("top_p", self.top_p, "in (0, 1]")
        set_("top_k", int_at_least(self.top_k, "top_k", 0))
        if not is_number(self.min_p) or not (0 <= self.min_p < 1):
            raise ConfigError("min_p", self.min_p, "in [0, 1) (0 = off)")
        if self.confidence_k is not None:
            set_("confidence_k", int_at_least(self.confidence_k, "confidence_k", 0))

    @property
    def processed_entropy(self) -> bool:
        return self.entropy_source is EntropySource.PROCESSED

    @property
    def resolved_confidence_k(self) -> int:
        """The k the token confidence is computed with: confidence_k, or entropy_k when None
        (0: off)."""
        return self.entropy_k if self.confidence_k is None else self.confidence_k

    @property
    def confidence(self) -> bool:
        """Every token's confidence is reported (its k > 0)."""
        return self.resolved_confidence_k > 0

    @property
    def reads_logprobs(self) -> bool:
        """The engine must return log-probabilities: for the top-K, the confidence, or both."""
        return self.logprobs or self.confidence

    @property
    def logprobs_k(self) -> int:
        """How many log-probabilities per position a backend asks its engine for: the larger
        of the entropy's K (when it reports the top-K) and the confidence's k."""
        return max(self.entropy_k if self.logprobs else 0, self.resolved_confidence_k)

    @property
    def logprobs_mode(self) -> str:
        """vLLM's engine-level `logprobs_mode` for this entropy source."""
        return "processed_logprobs" if self.processed_entropy else "raw_logprobs"

    @property
    def sampling(self) -> "SamplingSettings":
        """Just the sampling settings (an `EagerConfig` is one, with the method's on top)."""
        return SamplingSettings(**{f.name: getattr(self, f.name) for f in fields(SamplingSettings)})


def setting_fields(cls: type) -> list[Any]:
    """The dataclass fields of `cls` a user sets (those derived by the run left out)."""
    return [f for f in fields(cls) if f.metadata.get("setting", True)]


__all__ = ["ConfigError", "MIN_TEMPERATURE", "EntropySource", "SamplingSettings", "as_enum", "setting_fields",
           "NOT_A_SETTING"]
