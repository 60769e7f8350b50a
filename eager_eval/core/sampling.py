"""SamplingSettings: how every backend samples and what top-K it reports, validated once.

Every front end builds an EagerConfig; every backend gets this object from it
(`SamplingSettings.from_config`, or `EagerConfig.sampling`). The range checks live here only
(EagerConfig runs them on its own fields through this class), in the way of vLLM's
`SamplingParams`: construction checks what needs no model; what needs the model (the
vocabulary size) waits for `EagerConfig.verify_model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eager_eval.core.config import ConfigError, EntropySource, _as_enum
from eager_eval.common.settings import int_at_least, is_number

if TYPE_CHECKING:
    from eager_eval.core.config import EagerConfig


@dataclass(frozen=True)
class SamplingSettings:
    """What every sequence of a run samples with, and the top-K it reports (names as in
    EagerConfig)."""

    entropy_k: int = 20
    """K: top-K logprobs reported per token (the entropy's K; sampling's own is `top_k`)."""
    temperature: float = 0.6
    """0 = greedy. Finite: an infinite temperature samples uniformly over the vocabulary."""
    top_p: float = 1.0
    top_k: int = 0
    """0 = off (each engine maps it to whatever it reads as off)."""
    entropy_source: EntropySource = EntropySource.RAW
    """raw: logprobs before temperature/top-k/top-p (the reference); processed: of the
    distribution sampled from."""
    logprobs: bool = True
    """Report the top-K. False only for runs that never branch (full_parallel): nothing reads
    it there, and on a GPU it costs a top-K over the vocabulary per row per step."""

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("entropy_source", _as_enum(EntropySource, "entropy_source", self.entropy_source))
        set_("entropy_k", int_at_least(self.entropy_k, "entropy_k", 2))
        t = self.temperature
        if not is_number(t) or not math.isfinite(t) or t < 0:
            raise ConfigError("temperature", t, "a finite number >= 0 (0 = greedy)")
        if not is_number(self.top_p) or not (0 < self.top_p <= 1):
            raise ConfigError("top_p", self.top_p, "in (0, 1]")
        set_("top_k", int_at_least(self.top_k, "top_k", 0))

    @property
    def processed_entropy(self) -> bool:
        return self.entropy_source is EntropySource.PROCESSED

    @property
    def logprobs_mode(self) -> str:
        """vLLM's engine-level `logprobs_mode` for this entropy source."""
        return "processed_logprobs" if self.processed_entropy else "raw_logprobs"

    @classmethod
    def from_config(cls, config: "EagerConfig") -> "SamplingSettings":
        """The run's settings; the top-K only for modes that branch."""
        return cls(config.entropy_k, config.temperature, config.top_p, config.top_k,
                   config.entropy_source, logprobs=config.is_branching)
