"""EagerConfig: every knob of the method (METHOD.md), validated once, shared by all front ends.

Front ends (CLI, lm-eval model_args, Inspect -M) expose exactly these field names, so a
setting means the same thing everywhere. Self-contained range checks happen at construction;
checks that need the model (vocabulary size, tokenizer) wait for `verify_model`, which every
engine runs when it makes a backend (`engines.py`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from eager_eval.core.sampling import SamplingSettings

from eager_eval.common.settings import (
    RENAMED,
    SettingError,
    int_at_least,
    is_number,
    parse_value,
    renamed_settings,
    unknown_setting_error,
)


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


class BranchPolicy(str, Enum):
    """What the two sequences of a fork continue with at the fork position."""

    TOP2 = "top2"
    """Parent takes the rank-1 token, the child the rank-2 token (the reference code)."""
    SAMPLE = "sample"
    """Parent keeps its sampled token; the child samples on its own seed from the same step."""


class EntropySource(str, Enum):
    RAW = "raw"
    """Entropy of the model's distribution before temperature/top-p (reference, vLLM default)."""
    PROCESSED = "processed"
    """Entropy of the distribution actually sampled from (after temperature, top-k, top-p)."""


ConfigError = SettingError
"""A setting is out of range; the message names the setting, the value and the fix (one class
with `settings.SettingError`, so every front end's parser raises the same error)."""


def _as_enum(enum_cls: type[Enum], name: str, value: Any) -> Enum:
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(str(value).strip().lower())
    except ValueError:
        options = ", ".join(m.value for m in enum_cls)
        raise ConfigError(name, value, f"one of: {options}") from None


@dataclass(frozen=True)
class EagerConfig:
    """Settings of one EAGer run. Defaults are the paper's (METHOD.md sections 2-4, 6)."""

    mode: Mode = Mode.EAGER_ADAPT
    """full_parallel | eager_init | eager_adapt | eager (full EAGer needs a verifier/labels)."""
    theta: float = 2.0
    """Entropy threshold in nats (> 0; +inf never branches). The paper uses about 2.0-2.5.
    Front ends also take `auto`: calibrated on the task's prompts (eager_eval.pipeline.calibration)."""
    max_seqs: int = 32
    """M: sequences per prompt in EAGer-init and in Full Parallel; the budget is M * N."""
    entropy_k: int = 20
    """K of the top-K entropy (the reference reads 20 logprobs). Not sampling's `top_k`; it was
    called `topk` before, which every front end still accepts (with a DeprecationWarning)."""
    percentile: float | None = 99.0
    """Dynamic threshold: tau = max(theta, this percentile of earlier entropies); None = theta."""
    window: int = 1000
    """No-branch window W: after W positions without a granted fork, branching ends."""
    think_end: str | None = "</think>"
    """End-of-thinking marker: a sequence never branches after it. None for non-thinking models."""
    branch_policy: BranchPolicy = BranchPolicy.TOP2
    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = 0
    """0 = off. Passed explicitly to every engine (HF generate would otherwise default to 50)."""
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
    entropy_source: EntropySource = EntropySource.RAW

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("mode", _as_enum(Mode, "mode", self.mode))
        set_("branch_policy", _as_enum(BranchPolicy, "branch_policy", self.branch_policy))
        set_("entropy_source", _as_enum(EntropySource, "entropy_source", self.entropy_source))
        if not is_number(self.theta) or math.isnan(self.theta) or self.theta <= 0:
            raise ConfigError("theta", self.theta, "a number of nats > 0 (use inf to never branch)")
        set_("theta", float(self.theta))
        self._check_int("max_seqs", 1)
        if self.percentile is not None:
            if not is_number(self.percentile) or not (0 < self.percentile <= 100):
                raise ConfigError("percentile", self.percentile, "in (0, 100], or None for a fixed theta")
            set_("percentile", float(self.percentile))
        self._check_int("window", 1)
        if self.think_end is not None and (not isinstance(self.think_end, str) or not self.think_end):
            raise ConfigError("think_end", self.think_end, "a non-empty string, or None")
        from eager_eval.core.sampling import SamplingSettings  # (it imports this module)

        sampling = SamplingSettings(self.entropy_k, self.temperature, self.top_p, self.top_k,
                                    self.entropy_source)  # the one copy of the sampling checks
        set_("entropy_k", sampling.entropy_k)
        set_("top_k", sampling.top_k)
        self._check_int("max_new_tokens", 1)
        self._check_int("seed", 0)
        self._check_int("adapt_cap", 1)
        self._check_int("adapt_full_theta_retries", 0)
        for name in ("adapt_theta_factor", "eager_theta_decay"):
            value = getattr(self, name)
            if not is_number(value) or not (0 < value <= 1):
                raise ConfigError(name, value, "in (0, 1]")
        if self.max_rounds is not None:
            self._check_int("max_rounds", 0)

    def _check_int(self, name: str, minimum: int) -> None:
        object.__setattr__(self, name, int_at_least(getattr(self, name), name, minimum))

    @property
    def is_branching(self) -> bool:
        return self.mode is not Mode.FULL_PARALLEL

    @property
    def topk(self) -> int:
        """The old name of `entropy_k` (kept for code written against it)."""
        return self.entropy_k

    def budget(self, n_prompts: int) -> int:
        """M * N: the sequences a task of `n_prompts` prompts may spend (METHOD.md section 4)."""
        return total_budget(self.max_seqs, n_prompts)

    @property
    def sampling(self) -> "SamplingSettings":
        """What the backends sample with (and the top-K they report, for branching modes)."""
        from eager_eval.core.sampling import SamplingSettings

        return SamplingSettings.from_config(self)

    def replace(self, **changes: Any) -> "EagerConfig":
        return dataclasses.replace(self, **renamed_settings(changes, "EagerConfig field"))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready settings (enums as their values, inf as the string 'inf')."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, float) and math.isinf(value):
                value = "inf"
            out[f.name] = value
        return out

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, strict: bool = True) -> "EagerConfig":
        """Build from front-end strings/values ('inf', 'none', '0.6', ...).

        With strict=True an unknown key is an error that lists the accepted names.
        """
        known = cls.field_names()
        values = renamed_settings(values)
        unknown = sorted(set(values) - known)
        if strict and unknown:
            raise unknown_setting_error(unknown[0], known)
        kwargs = {k: parse_value(v) for k, v in values.items() if k in known}
        return cls(**kwargs)

    def verify_think_end(self, encode: Any) -> None:
        """Checks needing the tokenizer: the end-of-thinking marker must encode to tokens."""
        if self.think_end is not None and not encode(self.think_end):
            raise ConfigError("think_end", self.think_end, "a marker the tokenizer can encode")

    def verify_model(self, *, vocab_size: int | None, encode: Any = None) -> None:
        """Checks needing the model (the second stage of validation, as vLLM's
        `SamplingParams.verify`): K of the entropy and the sampling top_k must fit its
        vocabulary (a larger K was silently clamped, recording a K that never ran; a larger
        top_k failed inside torch), and the end-of-thinking marker must encode."""
        if vocab_size is not None:
            if self.entropy_k > vocab_size:
                raise ConfigError("entropy_k", self.entropy_k, f"<= the model's vocabulary size "
                                  f"({vocab_size} tokens): K of the top-K entropy")
            if self.top_k > vocab_size:
                raise ConfigError("top_k", self.top_k, f"0 (off) or <= the model's vocabulary "
                                  f"size ({vocab_size} tokens)")
        if encode is not None:
            self.verify_think_end(encode)


def total_budget(max_seqs: int, n_prompts: int) -> int:
    """M * N, the budget of a task: the one place it is computed (budget pool, front ends'
    statistics, the report's words)."""
    return int(max_seqs) * int(n_prompts)


_dataclass_init = EagerConfig.__init__


def _init_accepting_old_names(self: EagerConfig, *args: Any, **kwargs: Any) -> None:
    """EagerConfig(topk=5) still works: the old name, with a DeprecationWarning (settings.RENAMED)."""
    if any(old in kwargs for old in RENAMED):
        kwargs = renamed_settings(kwargs, "EagerConfig field")
    _dataclass_init(self, *args, **kwargs)


EagerConfig.__init__ = _init_accepting_old_names  # type: ignore[method-assign]
