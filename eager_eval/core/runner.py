"""run(): drive a Backend over all prompts of a task at once, in any mode.

The runner owns the trees: which sequences exist, their tokens, when they finish, which forks
are granted, and the reallocation rounds. The backend only advances sequences. Each prompt's
tree (tree.py) is decided position by position, and a position is decided only once every
live sequence of that tree has reported it, so an engine that lets some sequences run ahead
(vLLM) yields the same tree as a lockstep one (transformers). Rounds start as early as the
same trees allow (schedule.py), while the trees before them are still decoding.

Two halves (worker.py): a planner here (the schedule, the budget pool, the store, the
results) and the trees' execution on a fleet of workers: on one backend, a `LocalFleet`
stepped in this same loop; with engine replicas, workers in other processes. Either way the
planner hears of a tree only when its state changes, never per token.
"""

from __future__ import annotations

import contextlib
import gc
import time
from typing import Callable, Iterator, Protocol, Sequence

from eager_eval.core.backend import Backend
from eager_eval.core.config import ConfigError, EagerConfig, Mode
from eager_eval.core.results import PromptResult, RoundStats, RunResult, TreeResult
from eager_eval.core.schedule import RoundSchedule, Start
from eager_eval.core.tree import PromptInput
from eager_eval.core.worker import (
    CapOrder,
    Fleet,
    FleetFactory,
    LocalFleet,
    TreeOrder,
    TreeState,
)

Verifier = Callable[[int, str], bool]
"""(prompt_idx, generated text) -> is it correct? Full EAGer's labels."""

Consensus = Callable[[int, Sequence[tuple[str, float]]], float]
"""(prompt_idx, [(finished text, weight)]) -> the share of the weight the leading answer holds:
deepconf_consensus's test (the pipeline extracts and compares the answers)."""


class TreeStore(Protocol):
    """Finished trees kept outside the run (resume): a stored tree is not generated again."""

    def get(self, prompt_idx: int, round_idx: int) -> TreeResult | None: ...

    def put(self, tree: TreeResult) -> None: ...


class _TreeView:
    """What the planner knows of one tree (schedule.TreeView): read back from a store, or
    reported by the fleet (`TreeState`). What a state says is final stays so: a tree started
    again after its worker was lost reports its early states a second time."""

    __slots__ = ("prompt_idx", "round", "cap", "settled", "is_done", "n_sequences", "hit_cap",
                 "correct", "result")

    def __init__(self, prompt_idx: int, round_idx: int, cap: int | None) -> None:
        self.prompt_idx = prompt_idx
        self.round = round_idx
        self.cap = cap
        self.settled = False
        self.is_done = False
        self.n_sequences = 0
        self.hit_cap = False
        self.correct = False
        """Full EAGer: some finished sequence of the tree is correct."""
        self.result: TreeResult | None = None

    @classmethod
    def stored(cls, result: TreeResult, correct: bool) -> "_TreeView":
        view = cls(result.prompt_idx, result.round, result.cap)
        view.settled = view.is_done = True
        view.n_sequences = len(result.sequences)
        view.hit_cap = result.hit_cap
        view.correct = correct
        view.result = result
        return view

    @property
    def n_counted(self) -> int:
        """Sequences the budget pool counts: a confidence-stopped one went back to it (known
        once the tree has finished; a tree that can still stop settles only then)."""
        return self.result.n_counted if self.result is not None else self.n_sequences

    def update(self, state: TreeState) -> None:
        if not self.settled:
            self.n_sequences = max(self.n_sequences, state.n_sequences)
            self.hit_cap = state.hit_cap
            self.settled = state.settled
        self.is_done = self.is_done or state.done


class _Planner:
    """Plans the rounds of every prompt and runs their trees on a fleet until all have finished.

    One loop: the fleet runs trees (worker.py) and reports the ones whose state changed; each
    such report lets the schedule start the next round's trees and give final caps
    (schedule.py), while the earlier ones decode on.
    """

    def __init__(self, fleet: Fleet, config: EagerConfig, schedule: RoundSchedule,
                 store: "TreeStore | None", on_tree_done: Callable[[TreeResult], None] | None,
                 verifier: "Verifier | None") -> None:
        self.fleet = fleet
        self.config = config
        self.schedule = schedule
        self.store = store
        self.on_tree_done = on_tree_done
        self.verifier = verifier
        self.views: dict[tuple[int, int], _TreeView] = {}
        self._running = 0  # trees sent to the fleet whose result has not come back
        self._changed = False  # a tree's state changed: the schedule may move on

    def start(self, starts: Sequence[Start]) -> None:
        """Send the trees to the fleet (or read them from the store)."""
        orders = []
        for s in starts:
            stored = self.store.get(s.prompt_idx, s.round) if self.store is not None else None
            if stored is not None:
                correct = self.verifier is not None and self.config.mode is Mode.EAGER and any(
                    self.verifier(s.prompt_idx, seq.text) for seq in stored.sequences)
                view = _TreeView.stored(stored, correct)
            else:
                view = _TreeView(s.prompt_idx, s.round, s.cap)
                orders.append(TreeOrder(s))
                self._running += 1
            self.views[(s.prompt_idx, s.round)] = view
            self.schedule.add_tree(view)
            self._changed = True
        if orders:
            self.fleet.start(orders)

    def _plan(self) -> None:
        """Let the schedule start trees and give final caps until it has nothing new."""
        while self._changed:
            self._changed = False
            starts, caps = self.schedule.update()
            if not starts and not caps:
                break
            self._changed = True
            self.start(starts)
            k = self.schedule.next_round - 1  # the round just planned
            for p, cap in caps.items():
                view = self.views[(p, k)]
                if view.cap is None:
                    view.cap = cap
                    self.fleet.set_cap(CapOrder(p, k, cap))

    def _take(self, state: TreeState) -> None:
        key = (state.prompt_idx, state.round)
        view = self.views[key]
        if view.result is not None:
            return  # a restarted tree's late report
        for _, text in state.finished:
            if not view.correct and self.verifier is not None:
                view.correct = bool(self.verifier(state.prompt_idx, text))
        view.update(state)
        if state.result is not None:
            view.result = state.result
            self._running -= 1
            if self.on_tree_done is not None:
                self.on_tree_done(state.result)
        self._changed = True

    def grade(self, view: "_TreeView") -> bool | None:
        """Full EAGer: True if a finished sequence is correct, False if all finished and none
        is, None while unknown. Each sequence is graded once, when it finishes."""
        if view.correct:
            return True
        return False if view.is_done else None

    def run(self, round0: Sequence[Start]) -> None:
        self.start(round0)
        self._plan()
        while self._running or not self.schedule.done_planning:
            for state in self.fleet.wait():
                self._take(state)
            if self._changed:
                self._plan()


def validate_run(prompts: Sequence[PromptInput], config: EagerConfig, verifier: Verifier | None,
                 consensus: "Consensus | None" = None) -> None:
    if not prompts:
        raise ValueError("run() got an empty prompt list: pass at least one prompt")
    if config.theta_is_auto:
        raise ConfigError("theta", config.theta, "a number of nats when a run starts: "
                          "theta=auto is measured first (pipeline.pool.calibrate)")
    if config.mode is Mode.EAGER and verifier is None:
        raise ConfigError(
            "mode", config.mode.value,
            "used with labels: full EAGer needs a verifier (gold answers); "
            "without labels use mode=eager_adapt",
        )
    if config.mode is Mode.DEEPCONF and config.deepconf_consensus is not None and consensus is None:
        raise ConfigError("deepconf_consensus", config.deepconf_consensus,
                          "used with a consensus test (run(..., consensus=...): the pipeline's "
                          "answers), or none")
    for i, p in enumerate(prompts):
        if not p.tokens:
            raise ValueError(f"prompt {i} has no tokens: every prompt needs at least one token")
        if p.max_new_tokens is not None and p.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens of prompt {i}", p.max_new_tokens, "an integer >= 1")


def run(
    prompts: Sequence[PromptInput],
    backend: "Backend | FleetFactory",
    config: EagerConfig,
    *,
    verifier: Verifier | None = None,
    store: TreeStore | None = None,
    on_tree_done: Callable[[TreeResult], None] | None = None,
    overlap_rounds: bool = True,
    consensus: Consensus | None = None,
) -> RunResult:
    """Generate for every prompt with `config.mode`; the budget pool spans all `prompts`.

    `backend`: a Backend (the trees run in this loop), or a FleetFactory, e.g. an engine's
    replicas (engines/replicas.py): the trees then run on its workers, and this process only
    plans (worker.py). `overlap_rounds=False` runs the reallocation rounds one after another
    (each starts when every tree of the one before it has finished), as the paper describes
    them; the default starts them as early as the same trees allow (schedule.py). Both give
    identical results, and so does any number of workers. `consensus`: deepconf_consensus's
    answer vote (`Consensus`; on one backend only for now).
    """
    validate_run(prompts, config, verifier, consensus)
    started = time.perf_counter()

    def tree_done(tree: TreeResult) -> None:
        if store is not None:  # saved the moment it ends: a crash mid-round loses no tree
            store.put(tree)
        if on_tree_done is not None:
            on_tree_done(tree)

    n, m = len(prompts), config.max_seqs
    texts = config.mode is Mode.EAGER  # its candidates are graded while it plans
    open_fleet = getattr(backend, "open_fleet", None)
    if open_fleet is not None and consensus is not None and config.deepconf_consensus is not None:
        raise ConfigError("deepconf_consensus", config.deepconf_consensus, "", message=(
            "deepconf_consensus runs on one engine only for now: give replicas=1, or leave "
            "deepconf_consensus none (DeepConf's early stop itself runs on replicas)"))
    with _frozen_heap():
        fleet: Fleet = (open_fleet(prompts, texts=texts) if open_fleet is not None
                        else LocalFleet(backend, config, prompts, texts=texts,
                                        consensus=consensus))
        schedule = RoundSchedule(config, n, overlap=overlap_rounds,
                                 speculate=overlap_rounds and fleet.late_forks)
        planner = _Planner(fleet, config, schedule, store, tree_done, verifier)
        schedule.grade = planner.grade
        roots = {Mode.FULL_PARALLEL: m, Mode.DEEPCONF: config.deepconf_warmup}.get(config.mode, 1)
        cap = roots if config.mode is Mode.DEEPCONF else m  # a deepconf warm-up holds its roots
        planner.run([Start(p, 0, config.theta, cap, cap, cap, roots=roots) for p in range(n)])

    results = [PromptResult(i) for i in range(n)]
    for (p, _), view in sorted(planner.views.items(), key=lambda item: item[0][1]):
        results[p].trees.append(view.result)
    rounds = [_round_stats(0, m * n, {p: cap for p in range(n)}, results)]
    rounds += [_round_stats(plan.round, plan.budget, plan.caps, results)
               for plan in schedule.plans if plan.caps]
    return RunResult(
        settings=config.to_dict(), prompts=results, rounds=rounds,
        wall_seconds=time.perf_counter() - started,
    )


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the garbage collector off what existed before the run (model, tokenizer, imported
    modules: often millions of objects). A run allocates per token; each full collection would
    scan that whole heap, which at a GPU engine's rate cost more than the runner itself (as
    vLLM does after loading its model). Nested or concurrent runs leave it to the first."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _round_stats(round_idx: int, budget: int, caps: dict[int, int],
                 results: Sequence[PromptResult]) -> RoundStats:
    trees = [t for p in caps for t in results[p].trees if t.round == round_idx]
    return RoundStats(round_idx, budget, dict(caps), sum(len(t.sequences) for t in trees),
                      sum(s.tokens_generated for t in trees for s in t.sequences))
