"""Concurrent generate() calls gathered into batches (one budget pool each), off the event loop.

Inspect runs every sample (x epoch) as its own asyncio task, each calling `generate()` once.
EAGer's budget pool needs a task's prompts together (METHOD.md section 4), so the provider
holds the calls as they arrive and answers them all from one run once no more can come:

    generate() ─┐                               worker thread (one batch at a time)
    generate() ─┼─> CallBatcher ── batch ──> run_batch(requests) -> one outcome per call
    generate() ─┘   (closes when every running
                     sample of the eval waits in it)

Generic over the request and answer types: nothing here knows EAGer or an engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Collection, Generic, TypeVar

import anyio

from eager_eval.frontends.inspect.samples import CallOrigin, PoolState

logger = logging.getLogger("eager_eval.frontends.inspect")

R = TypeVar("R")
A = TypeVar("A")


@dataclass
class _Slot(Generic[R, A]):
    request: R
    origin: CallOrigin | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: A | Exception | None = None


@dataclass
class _Batch(Generic[R, A]):
    size: int | None
    """Close at once with this many calls (None: no cap)."""
    eval_id: str | None = None
    """The Inspect eval whose calls this batch gathers (None: calls from outside an eval)."""
    slots: list[_Slot[R, A]] = field(default_factory=list)
    closed: anyio.Event = field(default_factory=anyio.Event)
    last_join: float = 0.0
    """When the latest call joined (anyio time)."""


PoolStateFn = Callable[[str, Collection[str]], PoolState]


class CallBatcher(Generic[R, A]):
    """Gathers concurrent calls into batches (one open batch per eval) and runs each batch in a
    worker thread.

    The first call of a batch leads: it waits until the batch may close, runs the batch off the
    event loop, and hands every call its outcome. A batch closes

    - at once when it holds `size` calls (a pool cap, or all the calls Inspect lets in at once);
    - inside an Inspect eval, when no further call of that eval can come
      (`pool_state(...)` is COMPLETE: every running sample waits in the batch, none is queued),
      or when every running sample has waited `window_s` seconds while Inspect keeps the others
      queued (BLOCKED: they could start only after the batch ran);
    - otherwise (UNKNOWN: a call from outside an eval, or an Inspect without the state)
      `window_s` seconds after its first call.

    The leader's part is shielded from cancellation, so a cancelled leader (a sample time
    limit) never strands the calls that joined its batch.
    """

    POLL_S = 0.05
    """How often a leader looks at the eval's samples while its batch is open."""
    STALL_S = 60.0
    """A batch still OPEN after this long without a new call runs anyway, with a warning:
    running samples that never call mean a limit the provider could not lift (e.g. Inspect's
    adaptive connections holding calls back while the batch holds the connections)."""

    def __init__(self, run_batch: Callable[[list[R]], list[A | Exception]], window_s: float,
                 pool_state: PoolStateFn | None = None) -> None:
        self.run_batch = run_batch
        self.window_s = window_s
        self.pool_state = pool_state
        self._open: dict[str | None, _Batch[R, A]] = {}

    async def submit(self, request: R, size: int | None, origin: CallOrigin | None = None) -> A:
        slot: _Slot[R, A] = _Slot(request, origin)
        key = origin.eval_id if origin is not None else None
        batch = self._open.get(key)
        is_leader = batch is None
        if batch is None:
            batch = self._open[key] = _Batch(size=None if size is None else max(1, size),
                                             eval_id=key)
        batch.slots.append(slot)
        batch.last_join = anyio.current_time()
        if batch.size is not None and len(batch.slots) >= batch.size:
            self._close(batch)
        if is_leader:
            with anyio.CancelScope(shield=True):
                await self._wait_until_closing(batch)
                self._close(batch)
                await self._run(batch)
        await slot.done.wait()
        if isinstance(slot.outcome, Exception):
            raise slot.outcome
        return slot.outcome  # type: ignore[return-value]

    async def _wait_until_closing(self, batch: _Batch[R, A]) -> None:
        if batch.eval_id is None or self.pool_state is None:
            with anyio.move_on_after(self.window_s):
                await batch.closed.wait()
            return
        opened = anyio.current_time()
        blocked_since: float | None = None
        while not batch.closed.is_set():
            waiting = {s.origin.sample for s in batch.slots if s.origin is not None}
            state = self.pool_state(batch.eval_id, waiting)
            now = anyio.current_time()
            if state is PoolState.COMPLETE:
                return
            if state is PoolState.UNKNOWN and now - opened >= self.window_s:
                return
            if state is PoolState.BLOCKED:
                blocked_since = now if blocked_since is None else blocked_since
                if now - blocked_since >= self.window_s:
                    return
            else:
                blocked_since = None
            if state is PoolState.OPEN and now - batch.last_join >= self.STALL_S:
                logger.warning(
                    "eager: %d calls waited %.0f s for samples of their eval that are running "
                    "but do not call; running the pool without them (is --max-connections or "
                    "--adaptive-connections holding calls back?)", len(batch.slots), self.STALL_S)
                return
            with anyio.move_on_after(self.POLL_S):
                await batch.closed.wait()

    def _close(self, batch: _Batch[R, A]) -> None:
        if self._open.get(batch.eval_id) is batch:
            del self._open[batch.eval_id]
        batch.closed.set()

    async def _run(self, batch: _Batch[R, A]) -> None:
        requests = [slot.request for slot in batch.slots]
        try:
            outcomes = await anyio.to_thread.run_sync(self.run_batch, requests)
        except Exception as err:  # noqa: BLE001 (a bug in run_batch: every call learns of it)
            outcomes = [RuntimeError(f"eager batch failed: {type(err).__name__}: {err}")
                        for _ in requests]
        for slot, outcome in zip(batch.slots, outcomes):
            slot.outcome = outcome
            slot.done.set()


__all__ = ["CallBatcher", "PoolStateFn"]
