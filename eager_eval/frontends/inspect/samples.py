"""What the `eager` provider may know of the eval that calls it: is any more call coming?

EAGer's budget pool should span a task's samples x epochs (METHOD.md section 4), so the
provider holds the calls that arrive and runs them together once no further call can arrive.
Inspect 0.3.285 hands a provider no sample count, but it keeps, per eval, the state its
control channel reads:

- `inspect_ai.log._samples.sample_active()`: the running sample (its `eval_id`, its own `id`)
  in the context of each generate() call;
- `inspect_ai.log._samples.active_samples()`: every sample (x epoch) running now, of every eval;
- `inspect_ai._control.eval_state.get_eval_state(eval_id)`: `total` (= samples x epochs) and
  the samples already terminal (completed, errored, cancelled).

A sample that is running but not waiting in the pool may still call; a queued one (total minus
terminal minus running) will call once Inspect starts it. So:

- every running sample of the eval waits in the pool and none is queued: no more calls can
  come (`PoolState.COMPLETE`);
- every running sample waits but some are queued: Inspect is holding them back (`--max-samples`
  or `--max-connections` below the task's size); they start only when running samples finish,
  which they cannot do before the pool runs (`PoolState.BLOCKED`: the caller closes the pool
  after a short settle time, since a queued sample may also be about to start);
- otherwise more calls are on their way (`PoolState.OPEN`).

These are private names of Inspect; where they are missing (another Inspect version, a call made
outside an eval) the answer is `PoolState.UNKNOWN` and the provider falls back to its time window.
Everything that touches them is in this module, and tests pin it against inspect_ai 0.3.285.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Collection


class PoolState(Enum):
    COMPLETE = "complete"
    """Every sample of the eval that can still call is waiting in the pool."""
    BLOCKED = "blocked"
    """Every running sample waits in the pool; Inspect keeps the others queued."""
    OPEN = "open"
    """Some running sample has not called yet: more calls are coming."""
    UNKNOWN = "unknown"
    """Inspect's sample state is not visible: decide by time."""


@dataclass(frozen=True)
class CallOrigin:
    """The sample (x epoch) a generate() call comes from, as Inspect tracks it."""

    eval_id: str
    sample: str
    """The running sample's own id (one per sample, epoch and attempt)."""


def _inspect_state() -> tuple[Callable[[], Any], Callable[[], list[Any]], Callable[[str], Any]] | None:
    try:
        from inspect_ai._control.eval_state import get_eval_state
        from inspect_ai.log._samples import active_samples, sample_active
    except ImportError:  # pragma: no cover (another Inspect version)
        return None
    return sample_active, active_samples, get_eval_state


def call_origin() -> CallOrigin | None:
    """The calling sample, or None outside an Inspect eval (or where Inspect hides it)."""
    state = _inspect_state()
    if state is None:
        return None
    active = state[0]()
    eval_id, sample = getattr(active, "eval_id", None), getattr(active, "id", None)
    if not isinstance(eval_id, str) or not isinstance(sample, str):
        return None
    return CallOrigin(eval_id, sample)


def pool_state(eval_id: str, waiting: Collection[str]) -> PoolState:
    """Whether more generate() calls can come from eval `eval_id`, given the samples (ids)
    whose calls wait in the pool."""
    state = _inspect_state()
    if state is None:
        return PoolState.UNKNOWN
    _, active_samples, get_eval_state = state
    eval_state = get_eval_state(eval_id)
    total, terminal = getattr(eval_state, "total", None), getattr(eval_state, "terminal", None)
    if not isinstance(total, int) or not isinstance(terminal, int):
        return PoolState.UNKNOWN
    running = [s.id for s in active_samples()
               if s.eval_id == eval_id and getattr(s, "completed", None) is None]
    waiting = set(waiting)
    if any(sample not in waiting for sample in running):
        return PoolState.OPEN
    queued = total - terminal - len(running)
    return PoolState.BLOCKED if queued > 0 else PoolState.COMPLETE


__all__ = ["PoolState", "CallOrigin", "call_origin", "pool_state"]
