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
from typing import Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from eager_eval.backends.base import Backend, Fork, NewTree, TokenStep
from eager_eval.results import TreeResult


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


class MethodProgress:
    """One method's bar: round-0 trees done of N prompts, reallocation trees, tokens/s."""

    def __init__(self, progress: Progress, name: str, n_prompts: int, resumed_round0: int,
                 resumed_later: int):
        self._progress = progress
        self._round0 = resumed_round0
        self._later = resumed_later
        self._started = time.perf_counter()
        self._task = progress.add_task(name, total=n_prompts, completed=resumed_round0,
                                       later=resumed_later, rate="", elapsed="0:00")

    def tree_done(self, tree: TreeResult) -> None:
        if tree.round == 0:
            self._round0 += 1
        else:
            self._later += 1
        self._progress.update(self._task, completed=self._round0, later=self._later)

    def tokens(self, total: int) -> None:
        """After every backend step: tokens/s and elapsed time so far. (rich's own elapsed
        column stops once round 0 is complete, while reallocation rounds still run.)"""
        elapsed = time.perf_counter() - self._started
        if elapsed > 0:
            minutes, seconds = divmod(int(elapsed), 60)
            self._progress.update(self._task, rate=f"{total / elapsed:,.0f} tok/s",
                                  elapsed=f"{minutes}:{seconds:02d}")


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

    def method(self, name: str, n_prompts: int, *, resumed_round0: int = 0,
               resumed_later: int = 0) -> MethodProgress:
        return MethodProgress(self._progress, name, n_prompts, resumed_round0, resumed_later)
