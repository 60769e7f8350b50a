"""The Backend protocol: the one seam between the core and an engine.

The runner owns every decision (entropy tests, forks, finishing, seeds, accounting); a backend
owns tensors or engine requests and only advances sequences. Keeping it this small is what lets
the same distributions and seeds give the same tree on every engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Root:
    """A root sequence of a tree: decoded from position 0 of the tree's prompt with its seed."""

    seq_id: int
    seed: int


@dataclass(frozen=True)
class NewTree:
    """One tree, admitted as one unit: its prompt and its roots (M for a Full Parallel prompt,
    one for EAGer). The runner decides a position only when every live sequence of a tree has
    reported it, so a backend must never start some of a tree's roots and hold back others.
    A fork's child belongs to its parent's tree."""

    tree_id: int
    prompt: tuple[int, ...]
    roots: tuple[Root, ...]
    max_new_tokens: int
    cap: int = 0
    """The most sequences the tree can ever hold, its roots and finished ones included (the
    controller refuses forks past it); 0: as many as its roots. Forks are never refused by a
    backend (the tree must not depend on batching), so a backend that bounds its memory
    reserves this many rows per tree."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", tuple(self.prompt))
        object.__setattr__(self, "roots", tuple(self.roots))
        if not self.prompt:
            raise ValueError(f"tree {self.tree_id}: prompt must not be empty")
        if not self.roots:
            raise ValueError(f"tree {self.tree_id}: a tree needs at least one root")
        if len({r.seq_id for r in self.roots}) != len(self.roots):
            raise ValueError(f"tree {self.tree_id}: its roots' sequence ids must differ")
        if self.max_new_tokens < 1:
            raise ValueError(f"tree {self.tree_id}: max_new_tokens must be >= 1, "
                             f"got {self.max_new_tokens}")
        if self.cap < 0:
            raise ValueError(f"tree {self.tree_id}: cap must be >= 0, got {self.cap}")
        object.__setattr__(self, "cap", max(self.cap, len(self.roots)))

    @classmethod
    def single(cls, seq_id: int, prompt: Sequence[int], seed: int, max_new_tokens: int, *,
               tree_id: int | None = None, cap: int = 1) -> "NewTree":
        """A tree of one root (tree id = its sequence id unless given)."""
        return cls(seq_id if tree_id is None else tree_id, tuple(prompt), (Root(seq_id, seed),),
                   max_new_tokens, cap)


class TokenStep(NamedTuple):
    """One sequence advanced by one token at generated position `position` (0-based).

    `topk_ids`/`topk_logprobs` (tuples or lists: read-only) are the K most probable next
    tokens at that position, most probable first, as log-probabilities of the distribution the
    entropy is read from (raw by default). A backend told the run never branches
    (full_parallel, deepconf) may leave both empty: the runner reads them only while a tree can
    branch. `token` is what the backend sampled there
    with the sequence's own seed.

    A NamedTuple, not a dataclass: one is made per generated token, and at a GPU engine's rate
    a frozen dataclass's construction alone (~1 us) is a fifth of the runner's budget.
    """

    seq_id: int
    position: int
    token: int
    topk_ids: Sequence[int]
    topk_logprobs: Sequence[float]
    entropy: float | None = None
    """The top-K entropy of `topk_logprobs` when the backend computed it (batched, once per
    step for all rows: `entropy.topk_entropies`); None: the runner computes it."""
    confidence: float | None = None
    """The token confidence at `position` (`entropy.topk_confidence` of the k = confidence_k
    largest log-probabilities), batched like the entropy, reported even when the top-K is not
    (a run that never branches); None: the runner computes it from `topk_logprobs`, or records
    no confidence for the sequence when those are empty too."""


@dataclass(frozen=True)
class Fork:
    """The runner's order to split `parent` at `position`.

    The parent's token at `position` becomes `parent_token` (it may differ from what was
    sampled: the top2 policy). The child shares the parent's tokens before `position` and holds
    `child_token` there, or, when `child_token` is None (the sample policy), samples its own
    token at `position` from the parent's distribution there with `child_seed`.
    """

    parent: int
    child: int
    position: int
    parent_token: int
    child_token: int | None
    child_seed: int


@runtime_checkable
class Backend(Protocol):
    """What an engine must do for the runner. Nothing here decides anything."""

    eos_token_ids: frozenset[int]

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of generated tokens (special tokens dropped), for stop strings and answers."""
        ...

    def add(self, trees: Sequence[NewTree]) -> None:
        """Queue trees; the backend admits each one whole, as its row or memory limit allows."""
        ...

    def step(self) -> list[TokenStep]:
        """Advance every admitted live sequence; report each new token (one or more per seq)."""
        ...

    def fork(self, fork: Fork) -> int | None:
        """Apply a fork. Return the child's token at `fork.position` if known now; None when it
        will arrive later through `step()` (an engine that must resubmit the prefix)."""
        ...

    def finish(self, seq_id: int) -> None:
        """Stop a sequence and free what it holds (EOS, stop string, length, or dropped)."""
        ...

    def has_unfinished(self) -> bool:
        """True while any added sequence is queued or live."""
        ...


# Optional, for speed only (the runner checks with getattr; the trees never depend on them):
#   token_pieces: Sequence[bytes]   each token's bytes, when decode is their concatenation
#   late_forks: bool                fork() may name a position the parent already ran past
#   stop_topk(seq_ids) -> None      the runner will not read these sequences' top-K again
#                                   (their tree can no longer branch): skip preparing it
