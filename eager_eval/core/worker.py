"""Where trees run: a worker executes them on one backend, a fleet is the runner's workers.

The runner (runner.py) plans: it holds the round schedule and the budget pool (Algorithm 2:
schedule.py, budget.py) and decides which trees start, with which cap, floor and theta. A
`TreeWorker` executes trees (Algorithm 1: tree.py) on its backend, token by token, and reports
per tree only what planning reads, as a `TreeState`: settled, done, its sequence count, hit_cap,
the texts of sequences that finished (full EAGer grades them while it plans), and at the end
the `TreeResult`. A `Fleet` is where the runner sends its trees and hears back from them:

- `LocalFleet`: one worker on the run's backend, stepped in the runner's own loop (the
  everyday case: one process, one engine);
- several workers in other processes, each with its own engine (engines/replicas.py: Ray
  actors; engines/simulated_fleet.py: in-process replicas on a simulated clock). Their driver
  side keeps its book in `Placement`: which worker holds which tree (each new tree goes to the
  least-loaded one), the commands each has yet to receive, and, when a worker is lost, the
  orders that start its unfinished trees again on the others.

Per-token work never leaves a worker, and events come back once per batch of steps, never per
token. A tree is the same wherever it runs and however often it is restarted: its seeds come
from (run seed, prompt, round, branch) (METHOD.md s. 8), its decisions from its own
distributions, and the planner gives it the cap, floor and theta it gets on one backend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, Union

from eager_eval.common.errors import UserError
from eager_eval.core.backend import Backend, NewTree, Root
from eager_eval.core.config import EagerConfig
from eager_eval.core.results import TreeResult
from eager_eval.core.schedule import Start
from eager_eval.core.text_watch import text_watch
from eager_eval.core.tree import PromptInput, Seq, Tree

TreeKey = tuple[int, int]
"""(prompt_idx, round): one tree of a run."""


@dataclass(frozen=True)
class TreeOrder:
    """Start a tree: the schedule's `Start` (prompt, round, theta, cap or floor, its confidence
    stop, its roots: M for Full Parallel, one for EAGer, the warm-up's or the rest's count for
    DeepConf)."""

    start: Start

    @property
    def key(self) -> TreeKey:
        return (self.start.prompt_idx, self.start.round)


@dataclass(frozen=True)
class CapOrder:
    """The final cap of a tree that started on a guaranteed floor (schedule.py)."""

    prompt_idx: int
    round: int
    cap: int

    @property
    def key(self) -> TreeKey:
        return (self.prompt_idx, self.round)


Command = Union[TreeOrder, CapOrder]


@dataclass
class TreeState:
    """One tree as the planner sees it, as of a worker's last step (what schedule.TreeView reads)."""

    prompt_idx: int
    round: int
    settled: bool
    done: bool
    n_sequences: int
    hit_cap: bool
    finished: tuple[tuple[int, str], ...] = ()
    """(creation index, text) of sequences that finished since the tree's last state: full
    EAGer's verifier grades them (only when the worker was opened with `texts`)."""
    result: TreeResult | None = None
    """Set once, when the tree has finished and its cap is final."""

    @property
    def key(self) -> TreeKey:
        return (self.prompt_idx, self.round)


@dataclass
class Batch:
    """What one worker reports after a batch of steps."""

    states: list[TreeState]
    tokens: int
    """Tokens its backend reported in these steps (progress displays)."""
    live: int
    """Its unfinished sequences now (the load a placement balances)."""
    idle: bool
    """It can do nothing more until a command arrives (every tree waits for its cap)."""


class TreeWorker:
    """Runs trees on one backend (see the module docstring); the `TreeHost` of its trees."""

    def __init__(self, backend: Backend, config: EagerConfig, prompts: Sequence[PromptInput],
                 *, texts: bool = False,
                 consensus: Callable[[int, Sequence[tuple[str, float]]], float] | None = None
                 ) -> None:
        self.backend = backend
        self.config = config
        self.prompts = prompts
        self.texts = texts
        self._consensus = consensus
        """deepconf_consensus's test (runner.Consensus); None where the run has none."""
        self.eos_token_ids = backend.eos_token_ids
        self.watch = text_watch(backend, config.think_end)
        self.late_forks = bool(getattr(backend, "late_forks", False))
        self._stop_topk = getattr(backend, "stop_topk", None)
        self._next_id = 0
        self._next_tree = 0  # backend tree ids: one per tree this worker started
        self._seq_of: dict[int, Seq] = {}
        self._trees: dict[TreeKey, Tree] = {}
        """Trees started here whose result has not been reported yet."""
        self._dirty: dict[int, Tree] = {}
        """id(tree) -> tree whose state may have changed since it was last reported."""
        self._shown: dict[TreeKey, tuple[bool, bool, int, bool]] = {}
        self._n_finished: dict[TreeKey, int] = {}
        self._texts_sent: dict[TreeKey, set[int]] = {}
        self.tokens_reported = 0
        self._tokens_batched = 0

    # --- TreeHost ------------------------------------------------------------------------
    def new_seq_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def register(self, seq: Seq) -> None:
        self._seq_of[seq.seq_id] = seq

    def seq_of(self, seq_id: int) -> Seq:
        return self._seq_of[seq_id]

    def tree_settled(self, tree: Tree) -> None:
        self._dirty[id(tree)] = tree

    def stop_topk(self, seq_ids: list[int]) -> None:
        """Their tree can no longer branch: a backend that can may stop preparing their top-K."""
        if seq_ids and self._stop_topk is not None:
            self._stop_topk(seq_ids)

    def consensus(self, prompt_idx: int, votes: Sequence[tuple[str, float]]) -> float:
        """The leading answer's share of a prompt's weighted vote (deepconf_consensus)."""
        if self._consensus is None:
            raise RuntimeError("a tree asked for a consensus this worker was given no test for")
        return self._consensus(prompt_idx, votes)

    # --- commands ------------------------------------------------------------------------
    def start(self, orders: Sequence[TreeOrder]) -> None:
        """Create the trees and queue them (whole, with their roots) on the backend."""
        new: list[NewTree] = []
        for order in orders:
            s = order.start
            if order.key in self._trees:
                raise ValueError(f"tree {order.key} (prompt, round) is already running here")
            tree = Tree(self, s.prompt_idx, s.round, self.prompts[s.prompt_idx], cap=s.cap,
                        theta=s.theta, n_roots=order.start.roots, floor=s.floor,
                        tree_id=self._next_tree, stop=s.stop)
            self._next_tree += 1
            self._trees[order.key] = tree
            self._dirty[id(tree)] = tree
            new.append(NewTree(tree.tree_id, tree.prompt.tokens,
                               tuple(Root(seq.seq_id, seq.seed) for seq in tree.roots),
                               tree.max_new_tokens, s.upper))
        if new:
            self.backend.add(new)

    def set_cap(self, order: CapOrder) -> None:
        tree = self._trees[order.key]
        tree.set_cap(order.cap)
        self._dirty[id(tree)] = tree

    def apply(self, commands: Sequence[Command]) -> None:
        """Run the commands in order (consecutive starts reach the backend in one add())."""
        starts: list[TreeOrder] = []
        for command in commands:
            if isinstance(command, TreeOrder):
                starts.append(command)
                continue
            self.start(starts)
            starts = []
            self.set_cap(command)
        self.start(starts)

    # --- the loop ------------------------------------------------------------------------
    def step(self) -> bool:
        """One backend step: trees take the reported tokens and decide what they can.
        False when the backend had nothing left to run."""
        steps = self.backend.step()
        if not steps:
            return self.backend.has_unfinished()
        self.tokens_reported += len(steps)
        seq_of = self._seq_of
        touched: dict[int, Tree] = {}
        for step in steps:
            seq = seq_of.get(step.seq_id)
            if seq is None:
                continue  # its tree already ended: an engine may report a token past a finish
            tree = seq.tree
            tree.receive(seq, step)
            touched[id(tree)] = tree
        texts = self.texts
        for tree in touched.values():
            tree.advance()
            if tree.is_done:  # (events() skips it unless that is news)
                self._dirty[id(tree)] = tree
            elif texts and len(tree.seqs) - len(tree.live) != self._n_finished.get(
                    (tree.prompt_idx, tree.round), 0):
                self._dirty[id(tree)] = tree
        return True

    def events(self) -> list[TreeState]:
        """States of the trees that changed since they were last reported."""
        if not self._dirty:
            return []
        dirty, self._dirty = self._dirty, {}
        out = []
        for tree in dirty.values():
            key = (tree.prompt_idx, tree.round)
            if self._trees.get(key) is not tree:
                continue  # reported finished already
            done = tree.is_done
            result = tree.result() if done and tree.cap is not None else None
            finished = self._new_texts(key, tree) if self.texts else ()
            shown = (tree.settled, done, tree.n_sequences, tree.hit_cap)
            if shown == self._shown.get(key) and not finished and result is None:
                continue
            self._shown[key] = shown
            out.append(TreeState(key[0], key[1], *shown, finished=finished, result=result))
            if result is not None:
                self._close(key, tree)
        return out

    def _new_texts(self, key: TreeKey, tree: Tree) -> tuple[tuple[int, str], ...]:
        self._n_finished[key] = len(tree.seqs) - len(tree.live)
        sent = self._texts_sent.setdefault(key, set())
        new = [(s.creation, tree.text_of(s)) for s in tree.seqs
               if s.finish_reason is not None and s.creation not in sent]
        sent.update(creation for creation, _ in new)
        return tuple(new)

    def _close(self, key: TreeKey, tree: Tree) -> None:
        """Forget a reported tree: its result holds its tokens now."""
        del self._trees[key]
        for book in (self._shown, self._n_finished, self._texts_sent):
            book.pop(key, None)
        for seq in tree.seqs:  # and break the tree <-> sequence cycles: freed now, not at
            self._seq_of.pop(seq.seq_id, None)  # the collector's next full pass
            seq.tree = None

    @property
    def live(self) -> int:
        """Unfinished sequences of the trees running here."""
        return sum(len(tree.live) for tree in self._trees.values())

    def advance(self, commands: Sequence[Command] = (), seconds: float | None = None) -> Batch:
        """Apply `commands`, then step until some tree's state changed, the backend has nothing
        left (idle), or `seconds` passed (a remote worker returns now and then, so that caps
        decided elsewhere reach it)."""
        self.apply(commands)
        states = self.events()
        idle = False
        started = time.perf_counter()
        while not states:
            if not self.step():
                idle = True
                break
            states = self.events()
            if seconds is not None and time.perf_counter() - started >= seconds:
                break
        tokens, self._tokens_batched = self.tokens_reported - self._tokens_batched, self.tokens_reported
        return Batch(states, tokens, self.live, idle and not states)


class Fleet(Protocol):
    """Where a run's trees execute (the module docstring)."""

    late_forks: bool
    """Every worker's backend can fork behind itself: trees may start on a floor."""

    def start(self, orders: Sequence[TreeOrder]) -> None: ...

    def set_cap(self, order: CapOrder) -> None: ...

    def wait(self) -> list[TreeState]:
        """Block until some tree's state changed; may return [] (call again). A RuntimeError
        when nothing can run although trees are unfinished."""
        ...


class FleetFactory(Protocol):
    """What an engine with several workers gives a run in place of a Backend
    (`Engine.new_backend`): the runner opens a fleet for its prompts."""

    def open_fleet(self, prompts: Sequence[PromptInput], *, texts: bool) -> Fleet: ...


class LocalFleet:
    """One worker on the run's own backend, stepped in the runner's loop."""

    def __init__(self, backend: Backend, config: EagerConfig, prompts: Sequence[PromptInput],
                 *, texts: bool,
                 consensus: Callable[[int, Sequence[tuple[str, float]]], float] | None = None
                 ) -> None:
        self.worker = TreeWorker(backend, config, prompts, texts=texts, consensus=consensus)
        self.late_forks = self.worker.late_forks
        self._commands: list[Command] = []

    def start(self, orders: Sequence[TreeOrder]) -> None:
        self._commands.extend(orders)

    def set_cap(self, order: CapOrder) -> None:
        self._commands.append(order)

    def wait(self) -> list[TreeState]:
        commands, self._commands = self._commands, []
        batch = self.worker.advance(commands)
        if batch.idle:
            raise RuntimeError("the backend has no sequences left but some trees are unfinished")
        return batch.states


class WorkersLostError(RuntimeError, UserError):
    """Every worker of a fleet is gone; the trees that finished were kept."""


class Placement:
    """The driver's book of a fleet of `n` workers (the module docstring).

    A worker's load is its live sequences at its last report plus the rows reserved
    (`Start.upper`) by the trees sent to it since; a new tree goes to the least-loaded worker
    (the lowest index on a tie)."""

    def __init__(self, n: int) -> None:
        self.alive: list[int] = list(range(n))
        self.where: dict[TreeKey, int] = {}
        self.orders: dict[TreeKey, TreeOrder] = {}
        self.caps: dict[TreeKey, int] = {}
        self.open: list[set[TreeKey]] = [set() for _ in range(n)]
        """Trees each worker holds whose result has not come back."""
        self.pending: list[list[Command]] = [[] for _ in range(n)]
        self.live = [0] * n
        self.reserved = [0] * n
        self._in_flight = [0] * n
        self.restarted: list[TreeKey] = []
        """Trees started again after their worker was lost."""

    def load(self, worker: int) -> int:
        return self.live[worker] + self.reserved[worker] + self._in_flight[worker]

    def least_loaded(self) -> int:
        return min(self.alive, key=lambda w: (self.load(w), w))

    def start(self, orders: Sequence[TreeOrder]) -> None:
        for order in orders:
            self._place(order, self.least_loaded())

    def _place(self, order: TreeOrder, worker: int) -> None:
        key = order.key
        self.where[key] = worker
        self.orders[key] = order
        self.open[worker].add(key)
        self.pending[worker].append(order)
        self.reserved[worker] += order.start.upper

    def set_cap(self, order: CapOrder) -> None:
        self.caps[order.key] = order.cap
        worker = self.where[order.key]
        if order.key in self.open[worker]:
            self.pending[worker].append(order)

    def take(self, worker: int) -> list[Command]:
        """The commands to send to `worker` now."""
        commands, self.pending[worker] = self.pending[worker], []
        self._in_flight[worker] += self.reserved[worker]
        self.reserved[worker] = 0
        return commands

    def received(self, worker: int, batch: Batch) -> None:
        """A batch came back from `worker` (every command sent before it was applied)."""
        self.live[worker] = batch.live
        self._in_flight[worker] = 0
        for state in batch.states:
            if state.result is not None:
                self.open[worker].discard(state.key)

    def lose(self, worker: int, why: str = "") -> list[TreeKey]:
        """`worker` is gone: its unfinished trees start again, from their orders (and their
        final caps), on the least-loaded of the others. Their keys, in order; a
        WorkersLostError when no worker is left."""
        if worker not in self.alive:
            return []
        self.alive.remove(worker)
        keys = sorted(self.open[worker])
        self.open[worker] = set()
        self.pending[worker] = []
        self.live[worker] = self.reserved[worker] = self._in_flight[worker] = 0
        if not self.alive:
            raise WorkersLostError(
                f"every replica is gone ({why or 'their processes died'}); the trees that "
                f"finished were kept: run the same command again (the CLI with --resume, lm-eval "
                f"and Inspect with the same trees=DIR) to continue from them")
        for key in keys:
            target = self.least_loaded()
            self._place(self.orders[key], target)
            if key in self.caps:
                self.pending[target].append(CapOrder(key[0], key[1], self.caps[key]))
        self.restarted.extend(keys)
        return keys


__all__ = ["TreeKey", "TreeOrder", "CapOrder", "Command", "TreeState", "Batch", "TreeWorker",
           "Fleet", "FleetFactory", "LocalFleet", "WorkersLostError", "Placement"]
