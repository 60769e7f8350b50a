"""The Backend protocol: the one seam between the core and an engine.

The runner owns every decision (entropy tests, forks, finishing, seeds, accounting); a backend
owns tensors or engine requests and only advances sequences. Keeping it this small is what lets
the same distributions and seeds give the same tree on every engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class NewSequence:
    """A root sequence: decode `prompt` from position 0 with its own seed."""

    seq_id: int
    prompt: tuple[int, ...]
    seed: int
    max_new_tokens: int
    tree: int | None = None
    """The tree this root starts. Roots with the same id are one tree (Full Parallel's M): they
    come adjacent in one `add()` call and must be admitted together, because the runner advances
    a tree in lockstep. None: a tree of its own."""
    tree_cap: int = 1
    """The most sequences the tree can ever hold, its roots and finished ones included (the
    controller refuses forks past it). Forks are never refused by a backend (the tree must not
    depend on batching), so a backend that bounds its memory reserves this many rows per tree."""


class TokenStep(NamedTuple):
    """One sequence advanced by one token at generated position `position` (0-based).

    `topk_ids`/`topk_logprobs` (tuples or lists: read-only) are the K most probable next
    tokens at that position, most probable first, as log-probabilities of the distribution the entropy is read from (raw by
    default). A backend told the run never branches (full_parallel) may leave both empty: the
    runner reads them only while a tree can branch. `token` is what the backend sampled there
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

    def add(self, sequences: Sequence[NewSequence]) -> None:
        """Queue root sequences; the backend admits them as its row or memory limit allows.

        Roots of one tree (same `tree` id, adjacent, all in this call) must be admitted
        together: the runner decides a position only when every live sequence of the tree
        reported it, so a tree split across admissions would wait on rows that never run. A
        fork's child belongs to its parent's tree.
        """
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
