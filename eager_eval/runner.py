"""run(): drive a Backend over all prompts of a task at once, in any mode.

The runner owns the trees: which sequences exist, their tokens, when they finish, which forks
are granted, and the reallocation rounds. The backend only advances sequences. Each prompt's
tree is decided position by position, and a position is decided only once every live sequence
of that tree has reported it, so an engine that lets some sequences run ahead (vLLM) yields
the same tree as a lockstep one (transformers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, Sequence

from eager_eval.backends.base import Backend, Fork, NewSequence, TokenStep
from eager_eval.budget import BudgetPool, PromptState
from eager_eval.config import BranchPolicy, ConfigError, EagerConfig, Mode
from eager_eval.controller import BranchController
from eager_eval.entropy import topk_entropy
from eager_eval.results import (
    BranchEvent,
    FinishReason,
    PromptResult,
    RoundStats,
    RunResult,
    SequenceResult,
    TreeResult,
)
from eager_eval.seeds import branch_seed

Verifier = Callable[[int, str], bool]
"""(prompt_idx, generated text) -> is it correct? Full EAGer's labels."""

_STOP_TAIL_TOKENS = 24
"""Tokens decoded at the tail of a sequence to look for stop strings (covers long stops)."""


@dataclass(frozen=True)
class PromptInput:
    tokens: tuple[int, ...]
    """The prompt as token ids, chat template already applied."""
    stop: tuple[str, ...] = ()
    """Stop strings; never applied inside an open thinking block."""
    max_new_tokens: int | None = None
    """Per-prompt override of config.max_new_tokens (lm-eval's max_gen_toks)."""
    opens_thinking: bool = False
    """The prompt itself ends inside a thinking block (e.g. a template that adds '<think>')."""


class TreeStore(Protocol):
    """Finished trees kept outside the run (resume): a stored tree is not generated again."""

    def get(self, prompt_idx: int, round_idx: int) -> TreeResult | None: ...

    def put(self, tree: TreeResult) -> None: ...


class _Seq:
    __slots__ = ("seq_id", "creation", "parent", "fork_position", "seed", "tokens",
                 "finish_reason", "think_closed_at", "opened_thinking", "pending", "deferred",
                 "event")

    def __init__(self, seq_id: int, creation: int, parent: int | None, fork_position: int,
                 seed: int, tokens: list[int], opened_thinking: bool) -> None:
        self.seq_id = seq_id
        self.creation = creation
        self.parent = parent
        self.fork_position = fork_position
        self.seed = seed
        self.tokens = tokens
        self.finish_reason: FinishReason | None = None
        self.think_closed_at: int | None = None
        """Position of the token that completed the end-of-thinking marker."""
        self.opened_thinking = opened_thinking
        self.pending: dict[int, TokenStep] = {}
        self.deferred = False
        """A child whose token at its fork position will arrive through step()."""
        self.event: BranchEvent | None = None
        """The fork that created this sequence."""


class _Tree:
    """One prompt's tree in one round, decided position by position."""

    def __init__(self, runner: "_Driver", prompt_idx: int, round_idx: int, prompt: PromptInput,
                 cap: int, theta: float, n_roots: int) -> None:
        c = runner.config
        self.runner = runner
        self.prompt_idx = prompt_idx
        self.round = round_idx
        self.prompt = prompt
        if cap < n_roots:
            raise ValueError(f"a tree's cap ({cap}) must hold its {n_roots} roots")
        self.cap = cap
        self.theta = theta
        self.max_new_tokens = prompt.max_new_tokens or c.max_new_tokens
        self.controller = BranchController(
            cap=cap, theta=theta, percentile=c.percentile, window=c.window, n_created=n_roots,
            branching=c.is_branching,
        )
        self.seqs: list[_Seq] = []
        self.events: list[BranchEvent] = []
        self.next_position = 0
        self.roots = [self._new_seq(None, 0, []) for _ in range(n_roots)]

    def _new_seq(self, parent: int | None, fork_position: int, tokens: list[int]) -> _Seq:
        creation = len(self.seqs)
        seed = branch_seed(self.runner.config.seed, self.prompt_idx, creation, self.round)
        seq = _Seq(self.runner.new_seq_id(), creation, parent, fork_position, seed, tokens,
                   self.prompt.opens_thinking)
        self.seqs.append(seq)
        self.runner.register(seq, self)
        return seq

    @property
    def live(self) -> list[_Seq]:
        return [s for s in self.seqs if s.finish_reason is None]

    @property
    def is_done(self) -> bool:
        return all(s.finish_reason is not None for s in self.seqs)

    # --- receiving steps -------------------------------------------------------------------
    def receive(self, seq: _Seq, step: TokenStep) -> None:
        if seq.finish_reason is not None:
            return  # an engine may report a token or two past a finish it has not seen yet
        if seq.deferred and step.position == seq.fork_position:
            seq.deferred = False  # the child's own token at its fork position (sample policy)
            seq.tokens.append(step.token)
            seq.event.child_token = step.token
            self._check_finish(seq, step.position)
            return
        if step.position >= len(seq.tokens):
            seq.pending[step.position] = step

    def _is_ready(self, t: int) -> bool:
        return all(len(s.tokens) > t or t in s.pending for s in self.live)

    def advance(self) -> None:
        """Decide every position that all live sequences have reported."""
        while not self.is_done and self._is_ready(self.next_position):
            self._decide(self.next_position)
            self.next_position += 1

    # --- one position ------------------------------------------------------------------------
    def _decide(self, t: int) -> None:
        c = self.runner.config
        branching = self.controller.is_branching
        tested: list[tuple[int, float]] = []
        observed: list[float] = []
        steps: dict[int, TokenStep] = {}
        for seq in self.live:  # creation order
            if len(seq.tokens) > t:
                continue  # a child created at t holds its token; first tested at t + 1
            step = seq.pending.pop(t)
            seq.tokens.append(step.token)
            steps[seq.seq_id] = step
            entropy = topk_entropy(step.topk_logprobs) if branching else 0.0
            thinking_over = self._has_closed_thinking(seq, before=t)
            self._check_finish(seq, t)
            if not branching:
                continue
            observed.append(entropy)
            if seq.finish_reason is None and not thinking_over and len(step.topk_ids) >= 2:
                tested.append((seq.seq_id, entropy))
        for grant in self.controller.decide_forks(tested, observed):
            self._fork(self.runner.seq_of(grant.seq_id), steps[grant.seq_id], t, grant.entropy,
                       grant.threshold, c.branch_policy)

    def _fork(self, parent: _Seq, step: TokenStep, t: int, entropy: float, tau: float,
              policy: BranchPolicy) -> None:
        if policy is BranchPolicy.TOP2:
            parent_token, child_token = step.topk_ids[0], step.topk_ids[1]
        else:
            parent_token, child_token = step.token, None
        child = self._new_seq(parent.creation, t, parent.tokens[:t])
        if self._has_closed_thinking(parent, before=t):
            child.think_closed_at = parent.think_closed_at
        child.opened_thinking = parent.opened_thinking
        got = self.runner.backend.fork(
            Fork(parent.seq_id, child.seq_id, t, parent_token, child_token, child.seed)
        )
        token = child_token if child_token is not None else got
        child.event = BranchEvent(t, parent.creation, child.creation, entropy, tau,
                                  parent_token, token)
        self.events.append(child.event)
        if parent.tokens[t] != parent_token:
            # The parent's token at t changed: anything it reported past t is stale, and the
            # backend re-reports from t + 1.
            parent.tokens[t] = parent_token
            parent.pending = {p: s for p, s in parent.pending.items() if p <= t}
            parent.think_closed_at = None if parent.think_closed_at == t else parent.think_closed_at
            self._check_finish(parent, t)
        if token is None:
            child.deferred = True
        else:
            child.tokens.append(token)
            self._check_finish(child, t)

    # --- finishing ---------------------------------------------------------------------------
    def _has_closed_thinking(self, seq: _Seq, before: int) -> bool:
        return seq.think_closed_at is not None and seq.think_closed_at < before

    def _check_finish(self, seq: _Seq, t: int) -> None:
        """EOS, a stop string outside thinking, or the length limit, at position t."""
        runner = self.runner
        reason = None
        token = seq.tokens[t]
        window = max(0, t - _STOP_TAIL_TOKENS)
        tail: str | None = None  # the decoded window, shared by the thinking and stop checks
        if runner.config.think_end is not None and seq.think_closed_at is None:
            tail = runner.backend.decode(seq.tokens[window: t + 1])
            self._track_thinking(seq, t, tail)
        if token in runner.backend.eos_token_ids:
            reason = FinishReason.EOS
        elif self.prompt.stop and self._stop_at(seq, t, window, tail) is not None:
            reason = FinishReason.STOP
        elif t + 1 >= self.max_new_tokens:
            reason = FinishReason.LENGTH
        if reason is not None:
            seq.finish_reason = reason
            seq.pending.clear()
            runner.backend.finish(seq.seq_id)

    def _track_thinking(self, seq: _Seq, t: int, tail: str) -> None:
        if self.runner.config.think_end in tail:
            seq.think_closed_at = t
        elif self.runner.think_start and self.runner.think_start in tail:
            seq.opened_thinking = True

    def _in_thinking(self, seq: _Seq) -> bool:
        return self.runner.config.think_end is not None and seq.opened_thinking and seq.think_closed_at is None

    def _stop_at(self, seq: _Seq, t: int, window: int, tail: str | None) -> int | None:
        """Character offset in the tail where a stop string starts, if one is there.

        Only text after the end-of-thinking marker counts; `tail` is the decoded window when
        the caller already has it.
        """
        if self._in_thinking(seq):
            return None
        start = window
        if seq.think_closed_at is not None:
            start = max(start, seq.think_closed_at + 1)
        if tail is None or start != window:
            tail = self.runner.backend.decode(seq.tokens[start: t + 1])
        hits = [tail.find(s) for s in self.prompt.stop if s and s in tail]
        return min(hits) if hits else None

    def result(self) -> TreeResult:
        decode = self.runner.backend.decode
        sequences = []
        for s in self.seqs:
            text = decode(s.tokens)
            if s.finish_reason is FinishReason.STOP:
                text = _cut_at_stop(text, self.prompt.stop, self.runner.config.think_end)
            sequences.append(SequenceResult(s.creation, self.round, s.parent, s.fork_position,
                                            s.seed, list(s.tokens), text, s.finish_reason))
        return TreeResult(self.prompt_idx, self.round, self.cap, self.theta, sequences,
                          list(self.events), hit_cap=self.controller.saturated)


def _cut_at_stop(text: str, stops: Sequence[str], think_end: str | None) -> str:
    """Cut before the first stop string that follows the thinking block."""
    offset = 0
    if think_end and think_end in text:
        offset = text.index(think_end) + len(think_end)
    hits = [text.find(s, offset) for s in stops if s and text.find(s, offset) >= 0]
    return text[: min(hits)] if hits else text


class _Driver:
    """Runs a set of trees on one backend until every sequence has finished."""

    def __init__(self, backend: Backend, config: EagerConfig, prompts: Sequence[PromptInput],
                 on_tree_done: Callable[[TreeResult], None] | None) -> None:
        self.backend = backend
        self.config = config
        self.prompts = prompts
        self.on_tree_done = on_tree_done
        self.think_start = config.think_end.replace("/", "", 1) if config.think_end else None
        self._next_id = 0
        self._next_tree = 0  # backend tree ids: one per tree of every round of the run
        self._tree_of: dict[int, _Tree] = {}
        self._seq_of: dict[int, _Seq] = {}

    def new_seq_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def register(self, seq: _Seq, tree: _Tree) -> None:
        self._seq_of[seq.seq_id] = seq
        self._tree_of[seq.seq_id] = tree

    def seq_of(self, seq_id: int) -> _Seq:
        return self._seq_of[seq_id]

    def run_trees(self, specs: Iterable[tuple[int, int, int, float, int]]) -> list[TreeResult]:
        """specs: (prompt_idx, round, cap, theta, n_roots). Results in the order of specs."""
        trees = [_Tree(self, p, r, self.prompts[p], cap, theta, n) for p, r, cap, theta, n in specs]
        new: list[NewSequence] = []
        for t in trees:
            new += [NewSequence(s.seq_id, t.prompt.tokens, s.seed, t.max_new_tokens,
                                tree=self._next_tree, tree_cap=t.cap) for s in t.roots]
            self._next_tree += 1
        self.backend.add(new)
        open_trees = {id(t): t for t in trees}
        finished: dict[int, TreeResult] = {}  # built once: result() decodes every sequence
        while open_trees:
            steps = self.backend.step()
            if not steps and not self.backend.has_unfinished():
                raise RuntimeError("the backend has no sequences left but some trees are unfinished")
            touched: dict[int, _Tree] = {}
            for step in steps:
                tree = self._tree_of[step.seq_id]
                tree.receive(self._seq_of[step.seq_id], step)
                touched[id(tree)] = tree
            for key, tree in touched.items():
                tree.advance()
                if tree.is_done and key in open_trees:
                    del open_trees[key]
                    finished[key] = tree.result()
                    if self.on_tree_done is not None:
                        self.on_tree_done(finished[key])
        return [finished[id(t)] for t in trees]


def validate_run(prompts: Sequence[PromptInput], config: EagerConfig, verifier: Verifier | None) -> None:
    if not prompts:
        raise ValueError("run() got an empty prompt list: pass at least one prompt")
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
) -> RunResult:
    """Generate for every prompt with `config.mode`; the budget pool spans all `prompts`."""
    validate_run(prompts, config, verifier)
    started = time.perf_counter()

    def tree_done(tree: TreeResult) -> None:
        if store is not None:  # saved the moment it ends: a crash mid-round loses no tree
            store.put(tree)
        if on_tree_done is not None:
            on_tree_done(tree)

    driver = _Driver(backend, config, prompts, tree_done)
    m = config.max_seqs
    results = [PromptResult(i) for i in range(len(prompts))]
    rounds: list[RoundStats] = []

    def run_round(round_idx: int, specs: list[tuple[int, int, float, int]], budget: int) -> None:
        trees: dict[int, TreeResult] = {}
        todo = []
        for p, cap, theta, n_roots in specs:
            stored = store.get(p, round_idx) if store is not None else None
            if stored is not None:
                trees[p] = stored
            else:
                todo.append((p, round_idx, cap, theta, n_roots))
        for tree in driver.run_trees(todo):
            trees[tree.prompt_idx] = tree
        for p, *_ in specs:
            results[p].trees.append(trees[p])
        rounds.append(RoundStats(
            round_idx, budget, {p: cap for p, cap, *_ in specs},
            sum(len(trees[p].sequences) for p, *_ in specs),
            sum(sum(s.tokens_generated for s in trees[p].sequences) for p, *_ in specs),
        ))

    if config.mode is Mode.FULL_PARALLEL:
        run_round(0, [(p, m, config.theta, m) for p in range(len(prompts))], m * len(prompts))
    else:
        run_round(0, [(p, m, config.theta, 1) for p in range(len(prompts))], m * len(prompts))
    if config.mode in (Mode.EAGER_ADAPT, Mode.EAGER):
        pool = BudgetPool(config, len(prompts))
        round_idx = 1
        while config.max_rounds is None or round_idx <= config.max_rounds:
            states = [_prompt_state(r, m, verifier) for r in results]
            plans = pool.plan_round(states)
            if not plans:
                break
            run_round(round_idx, [(pl.prompt_idx, pl.cap, pl.theta, 1) for pl in plans],
                      pool.budget(states))
            round_idx += 1
    return RunResult(
        settings=config.to_dict(), prompts=results, rounds=rounds,
        wall_seconds=time.perf_counter() - started,
    )


def _prompt_state(result: PromptResult, m: int, verifier: Verifier | None) -> PromptState:
    trees = result.trees
    has_correct = verifier is not None and any(
        verifier(result.prompt_idx, s.text) for s in result.sequences
    )
    return PromptState(
        prompt_idx=result.prompt_idx,
        n_sequences=result.n_sequences,
        init_hit_cap=len(trees[0].sequences) >= m,
        last_hit_cap=trees[-1].hit_cap,
        retries=len(trees) - 1,
        has_correct=has_correct,
    )
