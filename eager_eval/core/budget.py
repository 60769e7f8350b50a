"""BudgetPool: who gets the sequences EAGer-init did not spend (Algorithm 2, METHOD.md s. 4).

The pool sees every prompt of a task at once; each round it recomputes the unspent budget
B = M*N - sum(S_p), picks candidates, splits B evenly over them (remainder to the first ones),
caps each share, and says with which theta each candidate is re-run. Rounds repeat until the
budget or the candidates run out: every candidate run creates at least one sequence, so B
strictly falls and the loop ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from eager_eval.core.config import EagerConfig, Mode


@dataclass(frozen=True)
class PromptState:
    """What the pool needs to know of a prompt after the rounds so far."""

    prompt_idx: int
    n_sequences: int
    """S_p: all sequences of the prompt over all rounds."""
    init_hit_cap: bool
    """Its EAGer-init tree created M sequences."""
    last_hit_cap: bool
    """Its latest tree created as many sequences as that tree was allowed."""
    retries: int
    """Reallocation runs it already had."""
    has_correct: bool = False
    """Full EAGer only: some sequence is already correct."""


@dataclass(frozen=True)
class RetryPlan:
    prompt_idx: int
    cap: int
    """Sequences this retry may create (its allotment a_p after the cap)."""
    theta: float
    attempt: int
    """1 for the prompt's first retry."""


def split_evenly(budget: int, candidates: Sequence[int]) -> dict[int, int]:
    """B // |C| each, the remainder +1 to the first candidates; if B < |C|, one each to the
    first B. Candidates with nothing are left out."""
    if budget <= 0 or not candidates:
        return {}
    share, remainder = divmod(budget, len(candidates))
    out = {p: share + (1 if i < remainder else 0) for i, p in enumerate(candidates)}
    return {p: a for p, a in out.items() if a > 0}


class BudgetPool:
    def __init__(self, config: EagerConfig, n_prompts: int) -> None:
        if config.mode not in (Mode.EAGER_ADAPT, Mode.EAGER):
            raise ValueError(f"BudgetPool reallocates for eager_adapt and eager, not {config.mode.value}")
        self.config = config
        self.total = config.budget(n_prompts)

    def budget(self, states: Sequence[PromptState]) -> int:
        return self.total - sum(s.n_sequences for s in states)

    def prompt_cap(self, state: PromptState) -> int:
        """Most sequences one retry of this prompt may create.

        EAGer-adapt: the prompt's total stays within adapt_cap * M. Full EAGer: each retry is
        an EAGer-init run, at most M sequences (prompts that already hold M retry too).
        """
        m = self.config.max_seqs
        if self.config.mode is Mode.EAGER_ADAPT:
            return max(0, self.config.adapt_cap * m - state.n_sequences)
        return m

    def candidates(self, states: Sequence[PromptState]) -> list[int]:
        """EAGer-adapt: prompts whose latest tree hit its cap, with room left, in prompt order.
        Full EAGer: prompts with no correct sequence; those that hit M in EAGer-init first."""
        if self.config.mode is Mode.EAGER_ADAPT:
            return [s.prompt_idx for s in states if s.last_hit_cap and self.prompt_cap(s) > 0]
        unsolved = [s for s in states if not s.has_correct]
        capped = [s.prompt_idx for s in unsolved if s.init_hit_cap]
        rest = [s.prompt_idx for s in unsolved if not s.init_hit_cap]
        return capped + rest

    def theta_for(self, state: PromptState) -> float:
        """Threshold of the prompt's next retry (the reference's schedules)."""
        c, attempt = self.config, state.retries + 1
        if c.mode is Mode.EAGER_ADAPT:
            return c.theta if attempt <= c.adapt_full_theta_retries else c.theta * c.adapt_theta_factor
        if state.init_hit_cap:
            return c.theta
        return c.theta * c.eager_theta_decay**attempt

    def plan_round(self, states: Sequence[PromptState]) -> list[RetryPlan]:
        """The next round's retries; empty when the budget or the candidates are spent."""
        by_idx = {s.prompt_idx: s for s in states}
        allotted = split_evenly(self.budget(states), self.candidates(states))
        plans = []
        for p, share in allotted.items():
            cap = min(share, self.prompt_cap(by_idx[p]))
            if cap > 0:
                state = by_idx[p]
                plans.append(RetryPlan(p, cap, self.theta_for(state), state.retries + 1))
        return plans
