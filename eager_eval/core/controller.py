"""BranchController: the fork rule of one prompt's tree in one round (Algorithm 1).

It sees, position by position, the entropies of the sequences that may branch there and says
which forks are granted. It knows nothing of tokens, text or engines: the runner decides which
sequences are testable (not finished at this position, still thinking) and applies the forks.
The rules are METHOD.md section 8, chosen so that the tree is a pure function of the
per-position distributions, whatever order an engine reports sequences in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Sequence

from eager_eval.core.entropy import EntropyHistory


class BranchingEnd(str, Enum):
    """Why a tree stopped testing entropies."""

    CAP = "cap"
    """It hit its cap (see `BranchController.hit_cap`)."""
    WINDOW = "window"
    """W positions in a row granted no fork (the no-branch window)."""
    OFF = "off"
    """The run never branches (full_parallel)."""


@dataclass(frozen=True)
class Grant:
    seq_id: int
    entropy: float
    threshold: float


class BranchController:
    def __init__(
        self,
        *,
        cap: int | None,
        theta: float,
        percentile: float | None,
        window: int,
        n_created: int = 1,
        branching: bool = True,
        floor: int | None = None,
    ) -> None:
        if cap is None and floor is None:
            raise ValueError("a controller without its cap needs a floor (a guaranteed cap)")
        self.cap = cap
        """The most sequences the tree may hold; None while its allotment is not final."""
        self.floor = cap if cap is not None else floor
        """A cap the final one is guaranteed to reach: decisions below it need no cap."""
        self.theta = theta
        self.percentile = percentile
        self.window = window
        self.n_created = n_created
        """Sequences created so far in this tree, finished ones included (the cap counts them)."""
        self.n_granted = 0
        self.refused = False
        """A fork was wanted (entropy above tau) but the cap was already reached."""
        self.positions_without_fork = 0
        self.history = EntropyHistory(percentile) if percentile is not None else None
        self.ended: BranchingEnd | None = None if branching else BranchingEnd.OFF
        self.margin = math.inf
        """The closest any tested entropy came to its threshold, |entropy - tau| in nats (inf
        while none was tested): how far the numbers must move to flip one of the tree's
        decisions. Where tau was not read (every entropy <= theta <= tau) theta - entropy
        stands in: a lower bound, so the risk is never understated."""

    def set_cap(self, cap: int) -> None:
        """The final cap of a tree that started with a floor only."""
        if cap < self.floor:
            raise ValueError(f"the final cap {cap} is below the guaranteed floor {self.floor}")
        self.cap = self.floor = cap

    @property
    def hit_cap(self) -> bool:
        """The tree hit its cap: it forked up to it, or wanted a fork the cap refused.

        The second half matters for a retry allotted a single sequence: it holds its cap from
        the start, and only a refused fork says it was still uncertain.
        """
        return self.cap is not None and self.n_created >= self.cap and (
            self.n_granted > 0 or self.refused)

    @property
    def is_branching(self) -> bool:
        """False once the cap or the no-branch window ended branching for this tree."""
        return self.ended is None

    def _depends_on_cap(self, wanted: int) -> bool:
        """Would granting `wanted` forks here decide differently for some cap >= floor?

        All are granted and none refused for every such cap while the count stays within the
        floor; the tree hits its cap afterwards only if the cap equals a floor it reached with
        a grant. So the decision needs the cap past the floor, or at it after any grant.
        """
        after = self.n_created + wanted
        return after > self.floor or (after == self.floor and self.n_granted + wanted > 0)

    def threshold(self) -> float:
        """tau_t = max(theta, P-th percentile of entropies at earlier positions).

        Only earlier positions count (the reference also counts sequences handled earlier in
        the same step, which makes the threshold depend on scheduling order).
        """
        if self.history is None or len(self.history) == 0 or math.isinf(self.theta):
            return self.theta
        return max(self.theta, self.history.percentile())

    def decide_forks(
        self, tested: Sequence[tuple[int, float]], observed: Sequence[float]
    ) -> list[Grant] | None:
        """Decide one position.

        `tested`: (seq_id, entropy) of the sequences that may fork here, in creation order.
        `observed`: every entropy reported at this position (tested or not); recorded after
        the decision so that it only shapes the thresholds of later positions.
        Forks are granted in creation order while the tree holds fewer than `cap` sequences.
        None (and nothing recorded) when the cap is not final and the forks wanted here would
        reach the floor: the decision then depends on the cap.
        """
        if not self.is_branching:
            return []
        grants: list[Grant] = []
        top = max((e for _, e in tested), default=-math.inf)
        # tau >= theta: below theta nothing forks, and the percentile need not be read
        if top > self.theta:
            tau = self.threshold()
            wanted = [(seq_id, e) for seq_id, e in tested if e > tau]
            if self.cap is None and self._depends_on_cap(len(wanted)):
                return None
            self.margin = min(self.margin, min(abs(e - tau) for _, e in tested))
            limit = self.cap if self.cap is not None else self.floor  # all fit under a floor
            for seq_id, entropy in wanted:
                if self.n_created >= limit:
                    self.refused = True
                    break
                grants.append(Grant(seq_id, entropy, tau))
                self.n_created += 1
        elif tested:
            self.margin = min(self.margin, self.theta - top)
        self.n_granted += len(grants)
        if self.history is not None:
            self.history.add(observed)
        if grants:
            self.positions_without_fork = 0
        else:
            self.positions_without_fork += 1
        if self.hit_cap:
            self.ended = BranchingEnd.CAP
        elif self.positions_without_fork >= self.window:
            self.ended = BranchingEnd.WINDOW
        return grants
