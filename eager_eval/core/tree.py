"""Tree: one prompt's tree in one round, decided position by position (Algorithm 1).

The runner hands each tree the steps its sequences report; the tree decides a position t only
once every live sequence has reported t (an engine may let some run ahead), so the tree is
the same whatever order an engine reports in. Deciding t means: take each sequence's token,
check where it ends (EOS, a stop string outside thinking, the length limit), and ask the
controller which of the sequences that may still branch fork at t.

A tree may start before its cap is known (a reallocation round's allotment is final only when
the round before it has stopped branching, schedule.py): it then has a guaranteed `floor`
and decides on as long as no decision depends on the cap; a position whose forks would reach
the floor waits (`held`) until `set_cap` gives the final cap. The engine keeps generating in
the meantime; what it reported past the held position is buffered, like any engine lag.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from eager_eval.core.backend import Backend, Fork, TokenStep
from eager_eval.core.confidence import FOLD_EVERY, ConfidenceStats, ConfidenceTrack, TrackShape
from eager_eval.core.config import BranchPolicy, EagerConfig
from eager_eval.core.controller import BranchController
from eager_eval.core.entropy import topk_confidence, topk_entropy
from eager_eval.core.results import BranchEvent, FinishReason, SequenceResult, TreeResult
from eager_eval.core.seeds import branch_seed
from eager_eval.core.text_watch import StopSet, TextWatch


@dataclass(frozen=True)
class PromptInput:
    """One prompt as the runner takes it (front ends build it: prompts.py)."""

    tokens: tuple[int, ...]
    """The prompt as token ids, chat template already applied."""
    stop: tuple[str, ...] = ()
    """Stop strings; never applied inside an open thinking block."""
    max_new_tokens: int | None = None
    """Per-prompt override of config.max_new_tokens (lm-eval's max_gen_toks)."""
    opens_thinking: bool = False
    """The prompt itself ends inside a thinking block (e.g. a template that adds '<think>')."""


class TreeHost(Protocol):
    """What a tree needs of the run that holds it (the runner's driver)."""

    config: EagerConfig
    backend: Backend
    watch: TextWatch
    eos_token_ids: frozenset[int]

    def new_seq_id(self) -> int: ...

    def register(self, seq: "Seq") -> None: ...

    def seq_of(self, seq_id: int) -> "Seq": ...

    def tree_settled(self, tree: "Tree") -> None: ...

    def stop_topk(self, seq_ids: list[int]) -> None: ...

    def consensus(self, prompt_idx: int, votes: Sequence[tuple[str, float]]) -> float: ...


Vote = tuple[str, float]
"""(a finished sequence's text, its vote's weight)."""


@dataclass(frozen=True)
class StopBar:
    """A tree's confidence stop (docs/CONFIDENCE.md): its sequences stop once their group
    confidence falls below `bar`; `votes` are the earlier votes the consensus counts."""

    bar: float
    votes: tuple[Vote, ...] = ()
    consensus: float | None = None
    """Stop the live sequences once one answer holds this share of the weighted vote."""


class Seq:
    """One sequence of a tree: its tokens so far and what the text rules know of them."""

    __slots__ = ("seq_id", "tree", "creation", "parent", "fork_position", "seed", "tokens",
                 "finish_reason", "think_closed_at", "opened_at", "think_tail", "stop_tail",
                 "pending", "deferred", "event", "text", "conf")

    def __init__(self, seq_id: int, tree: "Tree", creation: int, parent: int | None,
                 fork_position: int, seed: int, tokens: "array[int]") -> None:
        self.seq_id = seq_id
        self.tree = tree
        self.creation = creation
        self.parent = parent
        self.fork_position = fork_position
        self.seed = seed
        self.tokens = tokens
        """Its token ids so far: an array('i'), 4 bytes each (a run holds every token)."""
        self.finish_reason: FinishReason | None = None
        self.think_closed_at: int | None = None
        self.opened_at: int | None = None
        self.think_tail = b""
        self.stop_tail = b""
        self.pending: dict[int, TokenStep] = {}
        """Steps reported ahead of the tree's decided position."""
        self.deferred = False
        """A child whose token at its fork position will arrive through step()."""
        self.event: BranchEvent | None = None
        """The fork that created this sequence."""
        self.text: str | None = None
        """Its final text, once finished and asked for."""
        self.conf: ConfidenceTrack | ConfidenceStats | None = None
        """Its confidence: a track while it decodes, its four numbers once finished; None when
        the run records none."""


class Tree:
    def __init__(self, driver: TreeHost, prompt_idx: int, round_idx: int, prompt: PromptInput,
                 *, cap: int | None, theta: float, n_roots: int, floor: int | None = None,
                 tree_id: int = 0, stop: StopBar | None = None) -> None:
        c = driver.config
        if cap is None and (floor is None or floor < n_roots):
            raise ValueError(f"a tree without its final cap needs a floor >= its {n_roots} roots")
        if cap is not None and cap < n_roots:
            raise ValueError(f"a tree's cap ({cap}) must hold its {n_roots} roots")
        self.driver = driver
        self.prompt_idx = prompt_idx
        self.round = round_idx
        self.prompt = prompt
        self.tree_id = tree_id
        self.theta = theta
        self.max_new_tokens = prompt.max_new_tokens or c.max_new_tokens
        self.stops = StopSet(prompt.stop)
        self.watch = driver.watch
        self.controller = BranchController(
            cap=cap, floor=floor, theta=theta, percentile=c.percentile, window=c.window,
            n_created=n_roots, branching=c.is_branching,
        )
        self.policy = c.branch_policy
        self.stop = stop
        self.n_stopped = 0
        """Sequences stopped for confidence (they go back to the budget pool)."""
        self.confidence_k = c.resolved_confidence_k
        self.track_shape = (TrackShape(c.confidence_window, self.max_new_tokens)
                            if c.confidence else None)
        self.seqs: list[Seq] = []
        self.live: list[Seq] = []
        """Unfinished sequences, in creation order."""
        self.events: list[BranchEvent] = []
        self.next_position = 0
        self.held: tuple[Any, ...] | None = None
        """(t, tested, observed, steps) of a position that waits for the final cap."""
        self._settled = False
        self.roots = [self._new_seq(None, 0, array("i")) for _ in range(n_roots)]
        self._check_settled(-1)

    @property
    def cap(self) -> int | None:
        return self.controller.cap

    @property
    def is_done(self) -> bool:
        return not self.live

    @property
    def n_sequences(self) -> int:
        return len(self.seqs)

    @property
    def n_counted(self) -> int:
        """Sequences the budget pool counts (a confidence-stopped one went back to it)."""
        return len(self.seqs) - self.n_stopped

    @property
    def hit_cap(self) -> bool:
        return self.controller.hit_cap

    def _new_seq(self, parent: int | None, fork_position: int, tokens: "array[int]") -> Seq:
        creation = len(self.seqs)
        seed = branch_seed(self.driver.config.seed, self.prompt_idx, creation, self.round)
        seq = Seq(self.driver.new_seq_id(), self, creation, parent, fork_position, seed, tokens)
        if self.prompt.opens_thinking:
            seq.opened_at = -1
        if parent is None and self.track_shape is not None:
            seq.conf = ConfidenceTrack(self.track_shape)
        self.seqs.append(seq)
        self.live.append(seq)
        self.driver.register(seq)
        return seq

    # --- receiving steps -------------------------------------------------------------------
    def receive(self, seq: Seq, step: TokenStep) -> None:
        if seq.finish_reason is not None:
            return  # an engine may report a token or two past a finish it has not seen yet
        if seq.deferred and step.position == seq.fork_position:
            seq.deferred = False  # the child's own token at its fork position (sample policy)
            seq.tokens.append(step.token)
            seq.event.child_token = step.token
            self._check_finish(seq, step.position)
            if seq.finish_reason is not None:
                self._drop_finished()
            return
        if step.position >= len(seq.tokens):
            seq.pending[step.position] = step

    def advance(self) -> None:
        """Decide every position that all live sequences have reported (unless held)."""
        while self.live and self.held is None:
            t = self.next_position
            for s in self.live:
                if len(s.tokens) <= t and t not in s.pending:
                    return
            self._decide(t)

    def set_cap(self, cap: int) -> None:
        """The final cap arrived: decide a held position and go on."""
        self.controller.set_cap(cap)
        if self.held is not None:
            t, tested, observed, steps = self.held
            self.held = None
            self._grant(t, tested, observed, steps)
        self.advance()

    # --- one position ------------------------------------------------------------------------
    def _decide(self, t: int) -> None:
        branching = self.controller.is_branching and not self._settled
        tested: list[tuple[int, float]] = []
        observed: list[float] = []
        steps: dict[int, TokenStep] = {}
        ended = False
        stop = self.stop
        for seq in self.live:  # creation order
            if len(seq.tokens) > t:
                continue  # a child created at t holds its token; first tested at t + 1
            step = seq.pending.pop(t)
            seq.tokens.append(step.token)
            if branching:
                closed = seq.think_closed_at
                entropy = step.entropy
                if entropy is None:
                    entropy = topk_entropy(step.topk_logprobs)
            track = seq.conf
            group = None
            if track is not None:
                confidence = step.confidence
                if confidence is None:  # None again: the backend reports no log-probabilities
                    confidence = self._confidence_of(seq, step)
                if confidence is None:
                    pass
                elif stop is None:  # ConfidenceTrack.push, inlined: once per generated token
                    pending = track.pending
                    pending.append(confidence)
                    if len(pending) >= FOLD_EVERY:
                        track.fold()
                else:
                    group = track.push_tested(confidence)
            self._check_finish(seq, t)
            if group is not None and group < stop.bar and seq.finish_reason is None:
                self._finish(seq, FinishReason.CONFIDENCE)  # DeepConf's early stop
                self.n_stopped += 1
            if seq.finish_reason is not None:
                ended = True
            if not branching:
                continue
            steps[seq.seq_id] = step
            observed.append(entropy)
            if seq.finish_reason is None and (closed is None or closed >= t) and len(step.topk_ids) >= 2:
                tested.append((seq.seq_id, entropy))
        if ended:
            self._drop_finished()
            if stop is not None and stop.consensus is not None and self.live:
                self._check_consensus(stop)
        if branching:
            self._grant(t, tested, observed, steps)
        else:
            self.next_position = t + 1
            self._check_settled(t)

    def _grant(self, t: int, tested: list, observed: list, steps: dict) -> None:
        grants = self.controller.decide_forks(tested, observed)
        if grants is None:  # the decision depends on a cap not known yet
            self.held = (t, tested, observed, steps)
            return
        for grant in grants:
            self._fork(self.driver.seq_of(grant.seq_id), steps[grant.seq_id], t, grant.entropy,
                       grant.threshold)
        self.next_position = t + 1
        self._check_settled(t)

    def _fork(self, parent: Seq, step: TokenStep, t: int, entropy: float, tau: float) -> None:
        if self.policy is BranchPolicy.TOP2:
            parent_token, child_token = step.topk_ids[0], step.topk_ids[1]
        else:
            parent_token, child_token = step.token, None
        child = self._new_seq(parent.creation, t, parent.tokens[:t])
        if isinstance(parent.conf, ConfidenceTrack):  # its state at t: the distribution at t is
            child.conf = parent.conf.copy()           # the parent's, whichever token it takes
        child.think_closed_at, child.opened_at = parent.think_closed_at, parent.opened_at
        self.watch.restore(child, t, self.stops)  # its text state before t is its parent's
        got = self.driver.backend.fork(
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
            self.watch.restore(parent, t, self.stops)
            self._check_finish(parent, t)
        if token is None:
            child.deferred = True
        else:
            child.tokens.append(token)
            self._check_finish(child, t)
        self._drop_finished()

    # --- finishing ---------------------------------------------------------------------------
    def _check_finish(self, seq: Seq, t: int) -> None:
        """EOS, a stop string outside thinking, or the length limit, at position t."""
        hit_stop = self.watch.observe(seq, t, self.stops)
        if seq.tokens[t] in self.driver.eos_token_ids:
            reason = FinishReason.EOS
        elif hit_stop:
            reason = FinishReason.STOP
        elif t + 1 >= self.max_new_tokens:
            reason = FinishReason.LENGTH
        else:
            return
        self._finish(seq, reason)

    def _finish(self, seq: Seq, reason: FinishReason) -> None:
        seq.finish_reason = reason
        seq.pending.clear()
        if isinstance(seq.conf, ConfidenceTrack):  # four numbers now; the buffers go
            seq.conf = seq.conf.stats()
        self.driver.backend.finish(seq.seq_id)

    def _confidence_of(self, seq: Seq, step: TokenStep) -> float | None:
        """The runner's fallback when a backend reports no confidence: from the top-K it
        reported (its first confidence_k, or all it has); None when it reported none."""
        if not step.topk_logprobs:
            seq.conf = None  # one token without it: the sequence records none
            return None
        return topk_confidence(step.topk_logprobs, self.confidence_k)

    def _check_consensus(self, stop: StopBar) -> None:
        """DeepConf's consensus stop: once one answer holds `stop.consensus` of the weighted
        vote (the earlier votes and this tree's finished voters, each weighted by its lowest
        group confidence, as the reference weighs its online vote), the live sequences stop."""
        votes = list(stop.votes) + [
            (self.text_of(s), s.conf.lowest_group) for s in self.seqs
            if s.finish_reason is not None and s.finish_reason.votes
            and isinstance(s.conf, ConfidenceStats)]
        if not votes or self.driver.consensus(self.prompt_idx, votes) < stop.consensus:
            return
        for seq in self.live:
            self._finish(seq, FinishReason.CONSENSUS)
        self._drop_finished()

    def _drop_finished(self) -> None:
        self.live = [s for s in self.live if s.finish_reason is None]

    @property
    def settled(self) -> bool:
        """No sequence can fork any more, so its count and hit_cap are final: branching ended
        (cap, window), every live sequence is past the end-of-thinking marker, or all ended.
        A tree whose sequences may stop for confidence settles only when all have ended: a
        stop gives a sequence back to the budget pool."""
        return (self._settled and self.stop is None) or not self.live

    def _check_settled(self, t: int) -> None:
        if self._settled:
            return
        if not self.controller.is_branching or not self.live or (
            self.driver.config.think_end is not None
            and all(s.think_closed_at is not None and s.think_closed_at <= t for s in self.live)
        ):
            self._settled = True
            self.driver.tree_settled(self)
            self.driver.stop_topk([s.seq_id for s in self.live])  # nothing reads them now

    # --- results -----------------------------------------------------------------------------
    def text_of(self, seq: Seq) -> str:
        """A finished sequence's text, cut before a stop string."""
        if seq.text is None:
            text = self.driver.backend.decode(seq.tokens)
            if seq.finish_reason is FinishReason.STOP:
                text = cut_at_stop(text, self.stops.texts, self.driver.config.think_end)
            seq.text = text
        return seq.text

    def result(self) -> TreeResult:
        if self.cap is None:
            raise RuntimeError("a tree's result needs its final cap")
        sequences = [SequenceResult(s.creation, self.round, s.parent, s.fork_position, s.seed,
                                    s.tokens, self.text_of(s), s.finish_reason,
                                    s.conf if isinstance(s.conf, ConfidenceStats) else None)
                     for s in self.seqs]
        margin = self.controller.margin
        return TreeResult(self.prompt_idx, self.round, self.cap, self.theta, sequences,
                          list(self.events), hit_cap=self.controller.hit_cap,
                          confidence_bar=self.stop.bar if self.stop is not None else None,
                          margin=margin if math.isfinite(margin) else None)


def cut_at_stop(text: str, stops: tuple[str, ...], think_end: str | None) -> str:
    """Cut before the first stop string that follows the thinking block."""
    offset = 0
    if think_end and think_end in text:
        offset = text.index(think_end) + len(think_end)
    hits = [text.find(s, offset) for s in stops if s and text.find(s, offset) >= 0]
    return text[: min(hits)] if hits else text


TreeCallback = Callable[[Tree], None]
