"""run(): drive a Backend over all prompts of a task at once, in any mode.

The runner owns the trees: which sequences exist, their tokens, when they finish, which forks
are granted, and the reallocation rounds. The backend only advances sequences. Each prompt's
tree (tree.py) is decided position by position, and a position is decided only once every
live sequence of that tree has reported it, so an engine that lets some sequences run ahead
(vLLM) yields the same tree as a lockstep one (transformers). Rounds start as early as the
same trees allow (schedule.py), in the same loop as the trees that are still decoding.
"""

from __future__ import annotations

import contextlib
import gc
import time
from typing import Callable, Iterator, Protocol, Sequence

from eager_eval.core.backend import Backend, NewTree, Root
from eager_eval.core.config import ConfigError, EagerConfig, Mode
from eager_eval.core.results import PromptResult, RoundStats, RunResult, TreeResult
from eager_eval.core.schedule import RoundSchedule, Start
from eager_eval.core.text_watch import text_watch
from eager_eval.core.tree import PromptInput, Seq, Tree

Verifier = Callable[[int, str], bool]
"""(prompt_idx, generated text) -> is it correct? Full EAGer's labels."""


class TreeStore(Protocol):
    """Finished trees kept outside the run (resume): a stored tree is not generated again."""

    def get(self, prompt_idx: int, round_idx: int) -> TreeResult | None: ...

    def put(self, tree: TreeResult) -> None: ...


class _StoredTree:
    """A tree read back from a TreeStore (resume): finished, nothing to generate."""

    def __init__(self, result: TreeResult) -> None:
        self.stored = result
        self.prompt_idx = result.prompt_idx
        self.round = result.round
        self.cap = result.cap
        self.settled = True
        self.is_done = True
        self.n_sequences = len(result.sequences)
        self.hit_cap = result.hit_cap

    def result(self) -> TreeResult:
        return self.stored


class _Driver:
    """Runs the trees of every round on one backend until every sequence has finished.

    One loop: the backend steps every live sequence; each tree decides the positions all its
    live sequences have reported; trees that settled or finished let the schedule start the
    next round's trees (schedule.py), while the earlier ones decode on.
    """

    def __init__(self, backend: Backend, config: EagerConfig, prompts: Sequence[PromptInput],
                 schedule: RoundSchedule, store: "TreeStore | None",
                 on_tree_done: Callable[[TreeResult], None] | None,
                 verifier: "Verifier | None") -> None:
        self.backend = backend
        self.config = config
        self.prompts = prompts
        self.schedule = schedule
        self.store = store
        self.on_tree_done = on_tree_done
        self.verifier = verifier
        self.eos_token_ids = backend.eos_token_ids
        self.watch = text_watch(backend, config.think_end)
        self._stop_topk = getattr(backend, "stop_topk", None)
        self._next_id = 0
        self._next_tree = 0  # backend tree ids: one per tree of every round of the run
        self._seq_of: dict[int, Seq] = {}
        self._changed = False  # a tree settled or finished: the schedule may move on
        self._open: dict[int, Tree] = {}  # id(tree) -> live tree, until its result is built
        self.results: dict[tuple[int, int], TreeResult] = {}
        self._correct: dict[int, bool] = {}  # backend seq id -> verifier's verdict

    def new_seq_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def register(self, seq: Seq) -> None:
        self._seq_of[seq.seq_id] = seq

    def seq_of(self, seq_id: int) -> Seq:
        return self._seq_of[seq_id]

    def tree_settled(self, tree: Tree) -> None:
        self._changed = True

    def stop_topk(self, seq_ids: list[int]) -> None:
        """Their tree can no longer branch: a backend that can may stop preparing their top-K."""
        if seq_ids and self._stop_topk is not None:
            self._stop_topk(seq_ids)

    # --- trees ---------------------------------------------------------------------------
    def start(self, starts: Sequence[Start], n_roots: int) -> None:
        """Create the trees (or read them from the store) and queue their roots."""
        new: list[NewTree] = []
        for s in starts:
            stored = self.store.get(s.prompt_idx, s.round) if self.store is not None else None
            if stored is not None:
                view = _StoredTree(stored)
                self.results[(s.prompt_idx, s.round)] = stored
                self.schedule.add_tree(view)
                self._changed = True
                continue
            tree = Tree(self, s.prompt_idx, s.round, self.prompts[s.prompt_idx], cap=s.cap,
                        theta=s.theta, n_roots=n_roots, floor=s.floor, tree_id=self._next_tree)
            self._next_tree += 1
            self._open[id(tree)] = tree
            self.schedule.add_tree(tree)
            new.append(NewTree(tree.tree_id, tree.prompt.tokens,
                               tuple(Root(seq.seq_id, seq.seed) for seq in tree.roots),
                               tree.max_new_tokens, s.upper))
        if new:
            self.backend.add(new)

    def _plan(self) -> None:
        """Let the schedule start trees and give final caps until it has nothing new."""
        while self._changed:
            self._changed = False
            while True:
                starts, caps = self.schedule.update()
                if not starts and not caps:
                    break
                self.start(starts, n_roots=1)
                for tree in self._open.values():
                    if tree.round == self.schedule.next_round - 1 and tree.prompt_idx in caps \
                            and tree.cap is None:
                        tree.set_cap(caps[tree.prompt_idx])
            self._collect_done()

    def _collect_done(self) -> None:
        for key, tree in list(self._open.items()):
            if tree.is_done and tree.cap is not None:
                del self._open[key]
                result = tree.result()
                self.results[(tree.prompt_idx, tree.round)] = result
                if self.on_tree_done is not None:
                    self.on_tree_done(result)

    def grade(self, tree: "Tree | _StoredTree") -> bool | None:
        """Full EAGer: True if a finished sequence is correct, False if all finished and none
        is, None while unknown. Each sequence is graded once."""
        if isinstance(tree, _StoredTree):
            return any(self.verifier(tree.prompt_idx, s.text) for s in tree.stored.sequences)
        for seq in tree.seqs:
            if seq.finish_reason is None:
                continue
            if seq.seq_id not in self._correct:
                self._correct[seq.seq_id] = self.verifier(tree.prompt_idx, tree.text_of(seq))
            if self._correct[seq.seq_id]:
                return True
        return False if tree.is_done else None

    # --- the loop ------------------------------------------------------------------------
    def run(self, round0: Sequence[Start], n_roots: int) -> None:
        self.start(round0, n_roots)
        self._plan()
        open_trees = self._open
        seq_of = self._seq_of
        while open_trees or not self.schedule.done_planning:
            steps = self.backend.step()
            if not steps and not self.backend.has_unfinished():
                raise RuntimeError("the backend has no sequences left but some trees are unfinished")
            touched: dict[int, Tree] = {}
            for step in steps:
                seq = seq_of[step.seq_id]
                tree = seq.tree
                tree.receive(seq, step)
                touched[id(tree)] = tree
            for tree in touched.values():
                was_done = tree.is_done
                tree.advance()
                if tree.is_done and not was_done:
                    self._changed = True
            if self._changed:
                self._plan()


def validate_run(prompts: Sequence[PromptInput], config: EagerConfig, verifier: Verifier | None) -> None:
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
    for i, p in enumerate(prompts):
        if not p.tokens:
            raise ValueError(f"prompt {i} has no tokens: every prompt needs at least one token")
        if p.max_new_tokens is not None and p.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens of prompt {i}", p.max_new_tokens, "an integer >= 1")


def run(
    prompts: Sequence[PromptInput],
    backend: Backend,
    config: EagerConfig,
    *,
    verifier: Verifier | None = None,
    store: TreeStore | None = None,
    on_tree_done: Callable[[TreeResult], None] | None = None,
    overlap_rounds: bool = True,
) -> RunResult:
    """Generate for every prompt with `config.mode`; the budget pool spans all `prompts`.

    `overlap_rounds=False` runs the reallocation rounds one after another (each starts when
    every tree of the one before it has finished), as the paper describes them; the default
    starts them as early as the same trees allow (schedule.py). Both give identical results.
    """
    validate_run(prompts, config, verifier)
    started = time.perf_counter()

    def tree_done(tree: TreeResult) -> None:
        if store is not None:  # saved the moment it ends: a crash mid-round loses no tree
            store.put(tree)
        if on_tree_done is not None:
            on_tree_done(tree)

    n, m = len(prompts), config.max_seqs
    schedule = RoundSchedule(config, n, overlap=overlap_rounds,
                             speculate=overlap_rounds and bool(getattr(backend, "late_forks", False)))
    driver = _Driver(backend, config, prompts, schedule, store, tree_done, verifier)
    schedule.grade = driver.grade
    n_roots = m if config.mode is Mode.FULL_PARALLEL else 1
    with _frozen_heap():
        driver.run([Start(p, 0, config.theta, m, m, m) for p in range(n)], n_roots)

    results = [PromptResult(i) for i in range(n)]
    for (p, _), tree in sorted(driver.results.items(), key=lambda item: item[0][1]):
        results[p].trees.append(tree)
    rounds = [_round_stats(0, m * n, {p: m for p in range(n)}, results)]
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
