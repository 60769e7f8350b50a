"""When each reallocation round's trees may start: as early as exactness allows.

Algorithm 2 plans round k from what rounds < k produced: the unspent budget B = M*N - sum S_p,
the candidates, an even split. Run one round after another and a method's wall time is the sum
of its rounds' longest sequences; on a GPU, where a decode step costs about the same at 50 or
500 live rows, EAGer-adapt then takes ~3x Full Parallel's time for fewer tokens. But a round's
plan needs far less than its trees' last tokens:

1. **Settled trees.** A tree that can create no more sequences (the cap or the no-branch
   window ended its branching, or every live sequence is past `</think>` or finished) has its
   final S_p and hit_cap. Once every tree of rounds < k has settled (full EAGer: and every
   prompt is known solved, or unsolved with all its sequences finished, since its candidates
   are graded), round k's plan is final: its trees start while the earlier ones decode on.
2. **Guaranteed allotments.** Before that, bounds already hold: S_p of an unsettled tree lies
   between its count and its cap, so B >= B_lo; the final candidates are the known ones plus
   some of the undecided; and a candidate's allotment, ceil((B - i) / |C|) for its index i in
   C, only falls as B falls, |C| grows or i grows. A known candidate whose worst case still
   gives it a sequence starts now with that floor (`Tree(cap=None, floor=...)`): it decides
   as usual until a fork would need more than the floor, and waits there for the final cap.
   This needs a backend that can fork at a position it has already run past (`late_forks`);
   others get (1) only.

Either way every tree gets the cap, theta and seeds it gets when rounds run one after another,
so the trees, seeds and metrics are the same (tests/test_schedule.py).

With `confidence_stop`, a round's sequences stop below their prompt's bar, read from its
EAGer-init tree's finished sequences, and a stopped sequence goes back to the pool: a round
then waits for every earlier tree to finish (neither shortcut above holds), and the rounds end
when one spends nothing (so they always end). DeepConf (`mode=deepconf`) has two rounds per
prompt: the warm-up tree, then, once it has finished, the tree of the other M - warm-up
sequences with the bar it set; no prompt waits for another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from eager_eval.core.budget import BudgetPool, PromptState
from eager_eval.core.confidence import ConfidenceStats, percentile
from eager_eval.core.config import EagerConfig, Mode
from eager_eval.core.results import TreeResult
from eager_eval.core.tree import StopBar


class TreeView(Protocol):
    """What the schedule reads of a tree (a live Tree or a stored, finished one)."""

    prompt_idx: int
    round: int

    @property
    def cap(self) -> int | None: ...

    @property
    def settled(self) -> bool: ...

    @property
    def is_done(self) -> bool: ...

    @property
    def n_sequences(self) -> int: ...

    @property
    def hit_cap(self) -> bool: ...

    @property
    def n_counted(self) -> int: ...

    result: TreeResult | None
    """Set once the tree has finished (with its final cap)."""


Grade = Callable[[TreeView], "bool | None"]
"""Full EAGer: True if a finished sequence of the tree is correct, False if every sequence
finished and none is, None while it cannot tell yet."""


@dataclass
class RoundPlan:
    round: int
    budget: int
    caps: dict[int, int]
    """prompt_idx -> allotment (the tree's cap)."""
    thetas: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Start:
    """Start prompt `prompt_idx`'s tree of `round`: with its final `cap`, or (cap None) with a
    guaranteed `floor` and at most `upper` sequences (for memory reservations)."""

    prompt_idx: int
    round: int
    theta: float
    cap: int | None
    floor: int
    upper: int
    roots: int = 1
    stop: StopBar | None = None
    """Its confidence stop (deepconf's later sequences, confidence_stop's rounds)."""


class RoundSchedule:
    """Plans rounds >= 1 of eager_adapt / eager from the trees of the rounds before them."""

    def __init__(self, config: EagerConfig, n_prompts: int, *, overlap: bool = True,
                 speculate: bool = False, grade: Grade | None = None) -> None:
        self.config = config
        self.overlap = overlap and not config.confidence_stop
        """False: plan a round only once every earlier tree has finished (rounds in sequence;
        always with confidence_stop: its bar and its refunds need finished trees)."""
        self.n_prompts = n_prompts
        self.pool = BudgetPool(config, n_prompts) if config.mode in (Mode.EAGER_ADAPT, Mode.EAGER) else None
        self.speculate = speculate and not config.confidence_stop
        self.deepconf = config.mode is Mode.DEEPCONF
        self.grade = grade
        self.trees: list[list[TreeView]] = [[] for _ in range(n_prompts)]
        """Each prompt's trees in round order (a round's speculative trees included)."""
        self.plans: list[RoundPlan] = []
        """Final plans of rounds 1, 2, ... (index = round - 1)."""
        self.done_planning = self.pool is None and not self.deepconf
        self._started: set[tuple[int, int]] = set()
        if self.deepconf:  # round 1 is known from the start: M - warm-up for every prompt
            rest = config.max_seqs - config.deepconf_warmup
            self.plans.append(RoundPlan(1, rest * n_prompts, {p: rest for p in range(n_prompts)}))

    @property
    def next_round(self) -> int:
        return len(self.plans) + 1

    def add_tree(self, tree: TreeView) -> None:
        self.trees[tree.prompt_idx].append(tree)
        self._started.add((tree.prompt_idx, tree.round))

    def update(self) -> tuple[list[Start], dict[int, int]]:
        """One planning step: (trees to start now, {prompt: final cap} of the speculative trees
        of a round just planned). Call after trees settled or finished, start what it returns
        (`add_tree`), and call again until it returns nothing."""
        if self.done_planning:
            return [], {}
        if self.deepconf:
            return self._deepconf_starts(), {}
        k = self.next_round
        if self.config.max_rounds is not None and k > self.config.max_rounds:
            self.done_planning = True
            return [], {}
        if k >= 2 and self._spent_nothing(k - 1):
            self.done_planning = True  # every sequence of the last round went back: stop here
            return [], {}
        states = self._final_states(k)
        if states is None:
            return (self._speculative_starts(k) if self.speculate else []), {}
        plans = self.pool.plan_round(states)
        plan = RoundPlan(k, self.pool.budget(states), {p.prompt_idx: p.cap for p in plans},
                         {p.prompt_idx: p.theta for p in plans})
        self.plans.append(plan)
        stray = self._started_in(k) - set(plan.caps)
        if stray:
            raise AssertionError(f"prompts {sorted(stray)} started in round {k} without an allotment")
        if not plans:
            self.done_planning = True
        starts = [Start(p, k, plan.thetas[p], cap, cap, cap, stop=self._stop_bar(p))
                  for p, cap in plan.caps.items() if (p, k) not in self._started]
        final_caps = {p: cap for p, cap in plan.caps.items() if (p, k) in self._started}
        for start in starts:
            self._started.add((start.prompt_idx, k))
        return starts, final_caps

    # --- confidence stops -----------------------------------------------------------------
    def _deepconf_starts(self) -> list[Start]:
        """The later sequences of each prompt whose warm-up tree has finished."""
        c = self.config
        rest = c.max_seqs - c.deepconf_warmup
        starts = []
        for p in range(self.n_prompts):
            trees = self.trees[p]
            if (p, 1) in self._started or not trees or trees[0].result is None:
                continue
            starts.append(Start(p, 1, c.theta, rest, rest, rest, roots=rest,
                                stop=self._stop_bar(p)))
            self._started.add((p, 1))
        if all((p, 1) in self._started for p in range(self.n_prompts)):
            self.done_planning = True
        return starts

    def _stop_bar(self, p: int) -> StopBar | None:
        """DeepConf's bar for prompt p: the deepconf_percentile-th percentile (linear
        interpolation, numpy's default, as the reference) of the lowest group confidences of
        its first tree's sequences (deepconf's warm-up, EAGer's init tree), which must have
        finished. Their votes, weighted by that confidence, where it reaches the bar."""
        c = self.config
        if not c.stops_on_confidence:
            return None
        warmup = self.trees[p][0].result
        stats = [s.confidence for s in warmup.sequences]
        if not stats or any(not isinstance(x, ConfidenceStats) for x in stats):
            raise RuntimeError(f"prompt {p}'s first tree has sequences without a confidence: "
                               "it cannot set the stop bar (trees stored by an older eager-eval? "
                               "start the run over)")
        bar = percentile([x.lowest_group for x in stats], c.deepconf_percentile)
        votes = tuple((s.text, s.confidence.lowest_group) for s in warmup.sequences
                      if s.finish_reason.votes and s.confidence.lowest_group >= bar)
        return StopBar(bar, votes, c.deepconf_consensus if self.deepconf else None)

    def _spent_nothing(self, k: int) -> bool:
        """Round k's trees kept no sequence (all went back to the pool for confidence)."""
        trees = [t for per_prompt in self.trees for t in per_prompt if t.round == k]
        return bool(trees) and all(t.is_done for t in trees) and not any(t.n_counted for t in trees)

    # --- states ---------------------------------------------------------------------------
    def _before(self, p: int, k: int) -> list[TreeView]:
        return [t for t in self.trees[p] if t.round < k]

    def _started_in(self, k: int) -> set[int]:
        return {p for p, r in self._started if r == k}

    def _final_states(self, k: int) -> list[PromptState] | None:
        """The exact states round k is planned from, or None while some are not final."""
        states = []
        for p in range(self.n_prompts):
            trees = self._before(p, k)
            if not all(t.settled if self.overlap else t.is_done for t in trees):
                return None
            has_correct = False
            if self.config.mode is Mode.EAGER:
                graded = self._graded(trees)
                if graded is None:
                    return None
                has_correct = graded
            states.append(PromptState(
                prompt_idx=p,
                n_sequences=sum(t.n_counted for t in trees),
                init_hit_cap=trees[0].n_sequences >= self.config.max_seqs,
                last_hit_cap=trees[-1].hit_cap,
                retries=len(trees) - 1,
                has_correct=has_correct,
            ))
        return states

    def _graded(self, trees: Sequence[TreeView]) -> bool | None:
        """True: some sequence is correct; False: all finished, none correct; None: not yet."""
        grades = [self.grade(t) for t in trees]
        if any(g is True for g in grades):
            return True
        if all(g is False for g in grades):
            return False
        return None

    # --- speculation ----------------------------------------------------------------------
    def _speculative_starts(self, k: int) -> list[Start]:
        """Known candidates of round k whose allotment is at least 1 in every outcome."""
        c, m = self.config, self.config.max_seqs
        total = m * self.n_prompts
        s_lo = s_hi = 0
        known: list[tuple[tuple[int, int], int, PromptState]] = []  # (order key, p, state)
        unknown: list[tuple[tuple[int, int] | None, int]] = []
        for p in range(self.n_prompts):
            trees = self._before(p, k)
            n = sum(t.n_sequences for t in trees)
            s_lo += n
            s_hi += sum(t.n_sequences if t.settled else t.cap for t in trees)
            verdict, state = self._candidate(p, trees, n)
            init_settled = trees[0].settled
            key = ((0 if trees[0].n_sequences >= m else 1) if c.mode is Mode.EAGER else 0, p)
            if verdict is True:
                known.append((key, p, state))
            elif verdict is None:
                unknown.append((key if init_settled or c.mode is not Mode.EAGER else None, p))
        size = len(known) + len(unknown)
        b_lo, b_hi = total - s_hi, total - s_lo
        starts = []
        for key, p, state in known:
            if (p, k) in self._started:
                continue
            known_before = sum(1 for other, _, _ in known if other < key)
            before = known_before + sum(1 for other, _ in unknown if other is None or other < key)
            room = self.pool.prompt_cap(state)
            floor = min(_share(b_lo, before, size), room)
            if floor < 1:
                continue
            upper = min(_share(b_hi, known_before, len(known)), room)
            starts.append(Start(p, k, self.pool.theta_for(state), None, floor, upper))
            self._started.add((p, k))
        return starts

    def _candidate(self, p: int, trees: Sequence[TreeView], n: int) -> tuple[bool | None, PromptState | None]:
        """Is p a candidate of the next round: True, False, or None (not known yet)."""
        m = self.config.max_seqs
        if self.config.mode is Mode.EAGER_ADAPT:
            if not trees[-1].settled:
                return None, None
            state = PromptState(p, n, trees[0].n_sequences >= m, trees[-1].hit_cap, len(trees) - 1)
            return (state.last_hit_cap and self.pool.prompt_cap(state) > 0), state
        graded = self._graded(trees)
        if graded is None:
            return None, None
        if graded:
            return False, None
        state = PromptState(p, n, trees[0].n_sequences >= m, trees[-1].hit_cap, len(trees) - 1,
                            has_correct=False)
        return True, state


def _share(budget: int, index: int, size: int) -> int:
    """A candidate's allotment under the even split: the budget dealt round-robin over `size`
    candidates, one at a time, this one at `index`: ceil((budget - index) / size)."""
    if size <= 0 or budget <= index:
        return 0
    return -(-(budget - index) // size)

