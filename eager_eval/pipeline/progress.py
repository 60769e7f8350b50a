"""Progress of a run on the terminal: trees done per method and live tokens/s.

Trees finish one at a time (`run(on_tree_done=...)`), but a Full Parallel tree finishes only
when its last sequence does, so tokens/s counted from finished trees would sit at 0 for most of
a run. `CountingBackend` counts the tokens the backend reports at each step instead; it
forwards everything else untouched, so the run is the same with or without it.

Output goes to stderr (stdout stays for the result table). On a non-terminal rich draws the
bars once, when they stop, so captured logs stay short.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from eager_eval.core.backend import Backend, Fork, NewTree, TokenStep
from eager_eval.core.results import TreeResult


class CountingBackend:
    """A Backend that counts reported tokens and calls `on_step(total)`; all else delegated."""

    def __init__(self, inner: Backend, on_step: Callable[[int], None] | None = None):
        self.inner = inner
        self.eos_token_ids = inner.eos_token_ids
        self.token_pieces = getattr(inner, "token_pieces", None)
        self.late_forks = getattr(inner, "late_forks", False)
        if hasattr(inner, "stop_topk"):
            self.stop_topk = inner.stop_topk
        self.on_step = on_step
        self.tokens_reported = 0
        """TokenSteps returned by step(): decoded tokens (a re-report after a fork included)."""

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.inner.decode(token_ids)

    def add(self, trees: Sequence[NewTree]) -> None:
        self.inner.add(trees)

    def step(self) -> list[TokenStep]:
        steps = self.inner.step()
        self.tokens_reported += len(steps)
        if self.on_step is not None:
            self.on_step(self.tokens_reported)
        return steps

    def fork(self, fork: Fork) -> int | None:
        return self.inner.fork(fork)

    def finish(self, seq_id: int) -> None:
        self.inner.finish(seq_id)

    def has_unfinished(self) -> bool:
        return self.inner.has_unfinished()


class RunCounts:
    """How far one run is: round-0 trees done of its N prompts, reallocation trees, tokens/s.

    Trees read back from a store (a resume) count as done. `watch(backend)` wraps the run's
    backend so that tokens are counted as they are reported; pass `tree_done` to the runner's
    `on_tree_done`. Subclasses show the counts (`shown`)."""

    def __init__(self, n_prompts: int, stored: Iterable[TreeResult] = ()) -> None:
        stored = list(stored)
        self.n_prompts = n_prompts
        self.round0 = sum(t.round == 0 for t in stored)
        self.later = len(stored) - self.round0
        self.tokens_reported = 0
        self._started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    @property
    def rate(self) -> float:
        """Tokens per second since the run started."""
        return self.tokens_reported / max(self.elapsed, 1e-9)

    def watch(self, backend: Backend) -> Backend:
        """`backend` counted as it reports; engine replicas (a FleetFactory) count themselves
        after each batch of steps and call `on_tokens`."""
        if hasattr(backend, "open_fleet"):
            backend.on_tokens = self.tokens  # type: ignore[attr-defined]
            return backend
        return CountingBackend(backend, self.tokens)

    def tree_done(self, tree: TreeResult) -> None:
        if tree.round == 0:
            self.round0 += 1
        else:
            self.later += 1
        self.shown(tree_done=True)

    def tokens(self, total: int) -> None:
        """After every backend step."""
        self.tokens_reported = total
        self.shown(tree_done=False)

    def shown(self, *, tree_done: bool) -> None:
        """The counts changed (a tree ended, or a step reported tokens)."""


class MethodProgress(RunCounts):
    """One method's bar: round-0 trees done of N prompts, reallocation trees, tokens/s."""

    def __init__(self, progress: Progress, name: str, n_prompts: int,
                 stored: Iterable[TreeResult] = ()):
        super().__init__(n_prompts, stored)
        self._progress = progress
        self._task = progress.add_task(name, total=n_prompts, completed=self.round0,
                                       later=self.later, rate="", elapsed="0:00")

    def shown(self, *, tree_done: bool) -> None:
        if tree_done:
            self._progress.update(self._task, completed=self.round0, later=self.later)
            return
        # tokens/s and elapsed time so far (rich's own elapsed column stops once round 0 is
        # complete, while reallocation rounds still run)
        minutes, seconds = divmod(int(self.elapsed), 60)
        self._progress.update(self._task, rate=f"{self.rate:,.0f} tok/s",
                              elapsed=f"{minutes}:{seconds:02d}")


class CounterProgress(RunCounts):
    """The counts as one line handed to `show(caption, value)` (a harness's own display:
    Inspect's `display_counter`), at most once per `every_s` seconds between trees."""

    def __init__(self, n_prompts: int, show: Callable[[str, str], None], caption: str,
                 stored: Iterable[TreeResult] = (), every_s: float = 1.0) -> None:
        super().__init__(n_prompts, stored)
        self.show, self.caption, self.every_s = show, caption, every_s
        self._shown_at = time.perf_counter()

    def shown(self, *, tree_done: bool) -> None:
        now = time.perf_counter()
        if tree_done or now - self._shown_at >= self.every_s:
            self._shown_at = now
            self.show(self.caption, f"{self.round0}/{self.n_prompts} prompts, +{self.later} "
                                    f"realloc trees, {self.rate:,.0f} tok/s")


class RunProgress:
    """Bars for the methods of one command; a context manager around all their runs."""

    def __init__(self, *, enabled: bool = True, console: Console | None = None):
        self._progress = Progress(
            TextColumn("{task.description:<13}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("prompts, +{task.fields[later]} realloc trees"),
            TextColumn("{task.fields[rate]:>12}"),
            TextColumn("{task.fields[elapsed]:>6}"),
            console=console or Console(stderr=True),
            disable=not enabled,
        )

    def __enter__(self) -> "RunProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def method(self, name: str, n_prompts: int, *,
               stored: Iterable[TreeResult] = ()) -> MethodProgress:
        """A bar for one run; `stored`: its trees read back from a store (done already)."""
        return MethodProgress(self._progress, name, n_prompts, stored)
