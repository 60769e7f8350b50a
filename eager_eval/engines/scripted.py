"""ScriptedBackend: a Backend whose distributions come from a Python function.

The tests' model: it exercises the runner through the production seam (like Inspect's
mockllm), with the entropies and tokens chosen by the test. It can also behave like an
asynchronous engine (sequences that start late, several tokens per step, shuffled reports,
a child's own token arriving later) to check that the tree never depends on scheduling.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from eager_eval.core.backend import Fork, NewTree, TokenStep
from eager_eval.core.seeds import unit_uniform

Distribution = Sequence[tuple[int, float]]
"""(token id, log-probability) pairs, most probable first: the top-K of one position."""

Script = Callable[[tuple[int, ...], tuple[int, ...]], Distribution]
"""(prompt tokens, generated tokens so far) -> the distribution of the next position."""


def sample_from(dist: Distribution, seed: int, position: int, greedy: bool) -> int:
    """Rank 1 when greedy; else inverse-CDF over the renormalised top-K, keyed by
    (seed, position) so a restarted sequence draws the same token again."""
    if greedy:
        return dist[0][0]
    weights = [math.exp(lp) for _, lp in dist]
    u = unit_uniform(seed, position) * sum(weights)
    acc = 0.0
    for (token, _), w in zip(dist, weights):
        acc += w
        if u < acc:
            return token
    return dist[-1][0]


class _Pieces(dict):
    """Token id -> the bytes decode() writes for it (decode is a plain concatenation)."""

    def __init__(self, vocab: Mapping[int, str] | None) -> None:
        super().__init__()
        self.vocab = vocab or {}

    def __missing__(self, token: int) -> bytes:
        piece = self[token] = self.vocab.get(token, f"<{token}>").encode()
        return piece


@dataclass
class _Live:
    prompt: tuple[int, ...]
    seed: int
    tokens: list[int]
    delay: int = 0


@dataclass
class ScriptedBackend:
    script: Script
    eos_token_ids: frozenset[int] = frozenset({0})
    vocab: Mapping[int, str] | None = None
    """Token id -> text for decode(); default '<id>'."""
    greedy: bool = True
    start_delay: Callable[[int], int] | None = None
    """Steps a new sequence (by backend id) waits before its first token: engine lag."""
    tokens_per_step: Callable[[int, int], int] | None = None
    """(seq id, step number) -> tokens reported in that step (vLLM stream deltas)."""
    shuffle_seed: int | None = None
    """Shuffle the report order of each step."""
    defer_child_token: bool = False
    """With child_token None, report the child's own token later through step()."""
    forks: list[Fork] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    steps_taken: int = 0

    late_forks = True
    """A fork may name a position the parent already ran past (it re-reports after it)."""

    def __post_init__(self) -> None:
        self.eos_token_ids = frozenset(self.eos_token_ids)
        self.token_pieces = _Pieces(self.vocab)
        self._live: dict[int, _Live] = {}
        self._tree_of: dict[int, int] = {}  # live seq id -> its tree id
        self._rng = random.Random(self.shuffle_seed)

    def decode(self, token_ids: Sequence[int]) -> str:
        if self.vocab is None:
            return "".join(f"<{t}>" for t in token_ids)
        return "".join(self.vocab.get(t, f"<{t}>") for t in token_ids)

    def add(self, trees: Sequence[NewTree]) -> None:
        open_trees = set(self._tree_of.values())
        for tree in trees:
            if tree.tree_id in open_trees:
                raise ValueError(f"tree id {tree.tree_id} is already in use")
        for tree in trees:
            for root in tree.roots:
                self._live[root.seq_id] = _Live(tree.prompt, root.seed, [], self._delay(root.seq_id))
                self._tree_of[root.seq_id] = tree.tree_id

    def _delay(self, seq_id: int) -> int:
        return self.start_delay(seq_id) if self.start_delay else 0

    def _next(self, live: _Live) -> tuple[int, Distribution]:
        position = len(live.tokens)
        dist = self.script(live.prompt, tuple(live.tokens))
        token = sample_from(dist, live.seed, position, self.greedy)
        live.tokens.append(token)
        return token, dist

    def step(self) -> list[TokenStep]:
        self.steps_taken += 1
        out: list[TokenStep] = []
        for seq_id, live in list(self._live.items()):
            if live.delay > 0:
                live.delay -= 1
                continue
            n = self.tokens_per_step(seq_id, self.steps_taken) if self.tokens_per_step else 1
            for _ in range(n):
                position = len(live.tokens)
                token, dist = self._next(live)
                out.append(TokenStep(seq_id, position, token, tuple(t for t, _ in dist),
                                     tuple(lp for _, lp in dist)))
        if self.shuffle_seed is not None:
            self._rng.shuffle(out)
        return out

    def fork(self, fork: Fork) -> int | None:
        self.forks.append(fork)
        parent = self._live[fork.parent]
        t = fork.position
        if parent.tokens[t] != fork.parent_token:
            parent.tokens[t:] = [fork.parent_token]  # restart: later tokens were stale
        prefix = parent.tokens[:t]
        child = _Live(parent.prompt, fork.child_seed, list(prefix), self._delay(fork.child))
        self._live[fork.child] = child
        self._tree_of[fork.child] = self._tree_of[fork.parent]
        if fork.child_token is not None:
            child.tokens.append(fork.child_token)
            return fork.child_token
        if self.defer_child_token:
            return None  # sampled in a later step(), like an engine that resubmits the prefix
        token, _ = self._next(child)
        return token

    def finish(self, seq_id: int) -> None:
        self.finished.append(seq_id)
        self._live.pop(seq_id, None)
        self._tree_of.pop(seq_id, None)

    def has_unfinished(self) -> bool:
        return bool(self._live)
