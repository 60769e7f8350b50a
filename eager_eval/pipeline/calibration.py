"""`theta=auto`: the entropy threshold read from the model's own top-K entropies on the task.

The paper's theta (2.0-2.5 nats, of ln 20 = 3.0 at most) was tuned for reasoning models whose
top-20 entropies are low almost everywhere. A small instruct model runs much hotter: SmolLM2-135M
has a median of about 1 nat on the demo problems, so theta = 2.0 forks at every tenth token and
every tree hits its cap. A fixed theta does not carry over between models, so `auto` measures.

The rule (docs/THETA.md has the reasoning and the numbers):

1. Warm-up: the run's own backend decodes the first `warmup_tokens` (32) tokens of up to
   `max_prompts` (16) of the task's prompts, spread evenly over the task, one root sequence
   each with the seed the run gives that prompt's root (the warm-up is the start of the real
   root). Every reported step's top-K entropy is kept (`entropy.topk_entropy`, the quantity
   the branch test reads).
2. Target: a trace that tests L = max_new_tokens positions and forks at a rate r grows to about
   e^(r L) sequences (every live sequence tests every position). Aim at S* = (M + 1) / 2, half
   the cap: easy prompts stay below it, uncertain ones reach M and get Algorithm 2's budget.
   So r = ln(S*) / L.
3. theta = the (1 - r) quantile of the warm-up entropies (linear interpolation, as the dynamic
   threshold's percentile), i.e. the entropy a fraction r of positions exceed. M = 1 (no fork
   possible) gives the largest entropy seen.

It is a pure function of the distributions the backend reports and the seeds, so the same
model, prompts and settings give the same theta; front ends record it (with this rule's
inputs) next to the settings, and `eager-eval run --resume` reuses the recorded value.

Nothing here imports torch: the calibration drives the `Backend` protocol (add, step, finish).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

from eager_eval.common.words import plural
from eager_eval.core.backend import Backend, NewTree
from eager_eval.core.config import THETA_AUTO, EagerConfig, Mode
from eager_eval.core.entropy import topk_entropy
from eager_eval.core.seeds import branch_seed

AUTO = THETA_AUTO
"""The theta value every front end accepts for a calibrated threshold (`EagerConfig` takes it)."""

WARMUP_TOKENS = 32
"""Tokens decoded per warm-up prompt: enough positions for a tail quantile, cheap next to a run
(on the demo's 6 prompts, about a third of one method's decoding steps)."""

MAX_PROMPTS = 16
"""Warm-up prompts at most: 16 x 32 = 512 entropies."""

MIN_THETA = 1e-4
"""theta must be > 0 (EagerConfig); a model certain everywhere in the warm-up gets this."""

MIN_ENTROPIES = 100
"""Fewer warm-up entropies than this give a warning: the rule's high quantile of a handful of
values is their maximum (one prompt of six tokens gives a threshold from six numbers), which
says little about the positions the run will test. Accepted (a small test run is legitimate),
said once with the count and the fix."""

RULE = "theta = quantile(warm-up top-K entropies, 1 - ln((M + 1) / 2) / max_new_tokens)"


@dataclass(frozen=True)
class Calibration:
    """The calibrated threshold and what it was computed from (recorded with the settings)."""

    theta: float
    quantile: float
    """The quantile of the warm-up entropies theta is (1 - ln((M + 1) / 2) / L)."""
    n_entropies: int
    n_prompts: int
    warmup_tokens: int
    median_entropy: float
    max_entropy: float
    rule: str = RULE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def caution(self) -> str | None:
        """A warning when theta came from too few entropies (MIN_ENTROPIES), else None."""
        if self.n_entropies >= MIN_ENTROPIES:
            return None
        return (f"theta=auto: {self.theta:g} is the {self.quantile:.2%} quantile of only "
                f"{self.n_entropies} entropies ({plural(self.n_prompts, 'prompt')} x up to "
                f"{self.warmup_tokens} tokens; at least {MIN_ENTROPIES} make it more than their "
                "largest value): give theta a number, or calibrate on more prompts")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


def target_quantile(max_seqs: int, max_new_tokens: int) -> float:
    """1 - ln((M + 1) / 2) / L: the share of positions that should not fork (rule step 2)."""
    rate = math.log((max_seqs + 1) / 2) / max_new_tokens
    return min(1.0, max(0.5, 1.0 - rate))


def warmup_entropies(backend: Backend, prompts: Sequence[tuple[int, ...]], prompt_indexes:
                     Sequence[int], config: EagerConfig, warmup_tokens: int) -> list[float]:
    """Top-K entropies of the first `warmup_tokens` positions of one root per prompt.

    Drives `backend` through add / step / finish only; a root ends at EOS or at the warm-up
    length. `prompt_indexes` are the prompts' places in the task (their roots' seeds).
    """
    length = min(warmup_tokens, config.max_new_tokens)
    seq_ids = list(range(len(prompts)))
    backend.add([NewTree.single(i, p, branch_seed(config.seed, index, 0, 0), length)
                 for i, p, index in zip(seq_ids, prompts, prompt_indexes)])
    live = set(seq_ids)
    entropies: list[float] = []
    while live and backend.has_unfinished():
        for step in backend.step():
            if step.seq_id not in live or step.position >= length:
                continue  # an engine may report a token past a finish it has not seen yet
            if step.entropy is not None:  # computed by the backend, batched
                entropies.append(step.entropy)
            elif step.topk_logprobs:
                entropies.append(topk_entropy(step.topk_logprobs))
            if step.token in backend.eos_token_ids or step.position + 1 >= length:
                live.discard(step.seq_id)
                backend.finish(step.seq_id)
    for seq_id in live:
        backend.finish(seq_id)
    return entropies


def calibrate_theta(new_backend: Callable[[EagerConfig], Backend],
                    prompts: Sequence[Sequence[int]], config: EagerConfig, *,
                    max_prompts: int = MAX_PROMPTS,
                    warmup_tokens: int = WARMUP_TOKENS) -> Calibration:
    """The `auto` theta for `config` (its M, max_new_tokens, K, sampling, seed) on `prompts`
    (the task's prompts as token ids, in task order).

    `new_backend(config)` makes the warm-up's backend (an Engine's `new_backend`); it is asked
    for a branching mode, since a full_parallel backend may skip the top-K logprobs.
    """
    if not prompts:
        raise ValueError("theta=auto needs at least one prompt to calibrate on")
    count = min(max_prompts, len(prompts))
    chosen = [i * len(prompts) // count for i in range(count)]  # spread over the task
    backend = new_backend(branching_config(config))
    entropies = warmup_entropies(backend, [tuple(prompts[i]) for i in chosen], chosen, config,
                                 warmup_tokens)
    if not entropies:
        raise ValueError("theta=auto: the warm-up produced no entropies (every prompt ended at "
                         "its first token); give theta a number")
    import numpy as np

    quantile = target_quantile(config.max_seqs, config.max_new_tokens)
    # linear interpolation, numpy's default: the rule of the dynamic threshold's percentile
    at_q, median, largest = np.percentile(entropies, [100.0 * quantile, 50.0, 100.0])
    return Calibration(
        theta=max(round(float(at_q), 4), MIN_THETA), quantile=round(quantile, 6),
        n_entropies=len(entropies), n_prompts=count,
        warmup_tokens=min(warmup_tokens, config.max_new_tokens),
        median_entropy=round(float(median), 4), max_entropy=round(float(largest), 4),
    )


def calibrate_on_engine(engine: Any, prompts: Sequence[Sequence[int]],
                        config: EagerConfig) -> Calibration:
    """`calibrate_theta` on an Engine's backends (sent to a replica's process by reference)."""
    return calibrate_theta(engine.new_backend, prompts, config)


def branching_config(config: EagerConfig) -> EagerConfig:
    """The config a calibration backend is built from: full_parallel's backend may skip the
    top-K logprobs the warm-up reads, so it is asked for as eager_init."""
    return config if config.is_branching else config.replace(mode=Mode.EAGER_INIT)


__all__ = ["AUTO", "RULE", "MIN_ENTROPIES", "Calibration", "target_quantile",
           "warmup_entropies", "calibrate_theta", "calibrate_on_engine", "branching_config"]
