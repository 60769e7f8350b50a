"""The transformers backend: one batched step loop over a slot KV cache, the same numbers for a
row whatever else is in the batch.

`generate()` cannot add rows to a running batch, so this is a hand-written loop
(ENGINES.md section 2). Every live sequence is a row: a slot of the KV cache (hf_slots.py), its
next position and token, and the logits of its last forward. One forward per `step()` serves
every row of every prompt.

- **The cache** (hf_slots.SlotCache): a slot per sequence, the token at position p in column p,
  columns grown by chunks. A fork copies its parent's slot into a free one; a finished row gives
  its slot back and nothing else moves; when holes add up to a row block, the highest rows move
  down into them (one row copy each). Nothing is copied per step.
- **Batch invariance.** A forward takes a multiple of `ROW_BLOCK` rows (dummy rows fill the
  holes and the last block), a prompt is prefilled alone (padded to a multiple of `ROW_BLOCK`
  tokens), and attention runs through `hf_slots.slot_attention` over widths that are multiples
  of `COLUMN_ALIGN`. With torch's CPU kernels this gives every row the same bits whatever other
  rows, `max_rows`, thread count or resume (measured: hf_slots.py, tests/test_hf_invariance.py),
  so the sampled tokens, entropies and forks of a tree depend on its own seeds only.
- **Admission.** `add()` queues trees; each `step()` admits queued trees whole (first in, first
  out, nothing overtakes) and prefills them: the runner advances a tree in lockstep, so a root
  left in the queue would stall its admitted siblings. Each distinct prompt is prefilled once and
  its slot copied to its other roots.
- **`max_rows` bounds live rows.** Forks are never refused (the tree must not depend on
  batching), so each live tree reserves the rows it may still need: `NewTree.cap` minus its
  finished sequences. A tree is admitted only while all reservations fit in `max_rows`, except
  that a tree is always admitted into an empty batch (one tree larger than `max_rows` runs
  alone). `max_rows="auto"` sizes it from the device's free memory when the first trees arrive
  (hf_memory.py): rows of prompt + max_new_tokens columns that fit.
- **Out of memory.** An allocation that fails in a forward (`torch.OutOfMemoryError`, or the
  CPU allocator's error) leaves nothing half done: a decode forward only writes the columns
  the retry writes again, and a row advances only once all forwards of the step succeeded. The
  backend then runs smaller forwards (half the rows, down to one block), admits no more rows
  than are live, and goes on; a prefill that fails puts its trees back at the head of the
  queue. Since a row's numbers do not depend on the batch, the trees are the ones an
  uninterrupted run builds. `stats.oom_recoveries` counts these.
- **Sampling.** A row's token at position t is drawn with one uniform `unit_uniform(seed, t)`
  (eager_eval.core.seeds: a counter-based hash of the sequence's seed and the position, computed
  for all rows at once on the device) by inverse CDF (`searchsorted` on the row's cumulative
  probabilities). A sequence's tokens therefore depend only on its own seed and logits
  (METHOD.md section 8), and no per-row generator state has to follow a row through forks. The
  ScriptedBackend draws with the same uniforms. Temperature 0 is argmax and draws nothing.
"""

from __future__ import annotations

import inspect
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from eager_eval.core.backend import Fork, NewTree, Root, TokenStep
from eager_eval.core.config import is_auto
from eager_eval.core.entropy import LOGPROB_FLOOR, topk_confidences, topk_entropies
from eager_eval.core.sampling import SamplingSettings
from eager_eval.core.seeds import hash64
from eager_eval.engines.hf_memory import (
    BatchStats,
    MemoryBudgetError,
    is_out_of_memory,
    measure_budget,
)
from eager_eval.engines.hf_slots import (
    ATTENTION,
    COLUMN_ALIGN,
    ROW_BLOCK,
    ForwardPlan,
    SlotCache,
    check_model,
    round_up,
)
from eager_eval.engines.tokens import end_token_ids, token_pieces

@dataclass(eq=False)  # identity: rows are removed from the list by `is`
class _Row:
    """One live sequence: its slot, how far its cache is filled and what it feeds next."""

    seq_id: int
    key: int
    """hash64(seed) as a signed int64: the row's half of its counter-based uniforms."""
    slot: int
    """Its slot in the cache and in the logits buffer (a batch row of the decode forward)."""
    filled: int
    """Cache columns holding its tokens: the prompt, then each fed token (its next column)."""
    position: int = -1
    """Last reported generated position (0-based); -1 until the first report."""
    token: int = -1
    """Token at `position`: the next step feeds it (a fork may have replaced the sampled one)."""


@dataclass(eq=False)  # identity: hashed into sets of live trees
class _TreeRows:
    """One tree's share of `max_rows`: what it holds now and may still grow to."""

    tree: NewTree
    queued: list[Root]
    """Its roots not admitted yet (all of them, until the tree is admitted)."""
    live: int = 0
    finished: int = 0

    def reserved(self, live: int | None = None) -> int:
        """Rows kept for it while it has live rows (`live`: as if it had that many)."""
        live = self.live if live is None else live
        return max(self.tree.cap - self.finished, live) if live else 0

    @property
    def columns(self) -> int:
        """The most cache columns one of its rows can fill (the last token is never fed)."""
        return len(self.tree.prompt) + self.tree.max_new_tokens


def _signed64(x: int) -> int:
    return x - (1 << 64) if x >= (1 << 63) else x


_GAMMA, _MUL1, _MUL2 = (_signed64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9,
                                               0x94D049BB133111EB))


def _shift_right(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch shifts signed values arithmetically)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def counter_uniforms(keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`seeds.unit_uniform(seed, position)` for many rows at once, on their device.

    `keys` = hash64(seed) as signed int64 (`_row_key`); splitmix64 in wrapping int64 arithmetic,
    the same bits as the Python version (tests/test_hf_backend.py checks it). float64 [n].
    """
    z = (keys ^ positions) + _GAMMA
    z = (z ^ _shift_right(z, 30)) * _MUL1
    z = (z ^ _shift_right(z, 27)) * _MUL2
    z = z ^ _shift_right(z, 31)
    return _shift_right(z, 11).double() / float(1 << 53)


def _row_key(seed: int) -> int:
    return _signed64(hash64(seed & ((1 << 64) - 1)))


class HFBackend:
    """`Backend` over a transformers causal LM (CPU, CUDA or MPS). See the module docstring."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        settings: SamplingSettings | None = None,
        *,
        max_rows: int | str = 64,
        device: str | None = None,
        row_block: int = ROW_BLOCK,
        stats: BatchStats | None = None,
        **sampling: Any,
    ):
        """`settings` (the run's: `EagerConfig.sampling`), or its fields as keywords
        (`entropy_k=`, `temperature=`, ...) for a backend used on its own. `max_rows`: an int,
        or "auto" (hf_memory.py). `row_block` 1 drops the padding to row blocks (faster at a
        few rows, no longer batch-invariant: benchmarks/throughput.py measures the cost).
        `stats`: where the chosen max_rows and out-of-memory recoveries are counted (the
        engine's, shared by its runs)."""
        if settings is None:
            settings = SamplingSettings(**sampling)
        elif sampling:
            raise TypeError(f"pass settings or sampling keywords, not both (got {sorted(sampling)})")
        auto = is_auto(max_rows)
        if not auto and (not isinstance(max_rows, int) or max_rows < 1):
            raise ValueError(f"max_rows must be >= 1 or 'auto', got {max_rows!r}")
        if row_block < 1:
            raise ValueError(f"row_block must be >= 1, got {row_block}")
        check_model(model)
        self.settings = settings.sampling  # an EagerConfig is one too: keep only what samples
        self.model = model.eval()
        self.tokenizer = tokenizer
        if device is not None:
            self.model = self.model.to(device)
        self.device = self.model.device
        self.stats = stats if stats is not None else BatchStats()
        self._budget = measure_budget(self.model, self.device) if auto else None
        self.max_rows: int | None = None if auto else max_rows
        """Most live rows (None: `auto`, until the first trees arrive)."""
        self.row_block = row_block
        config = getattr(model, "generation_config", None)
        self.eos_token_ids = end_token_ids(tokenizer, getattr(config, "eos_token_id", None))
        self.token_pieces = token_pieces(tokenizer)
        """Each token's bytes when decode is their concatenation: the runner's text rules
        then need no decode per token (text_watch.py)."""
        # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns until 5.40)
        params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

        self._waiting: deque[_TreeRows] = deque()  # trees not admitted yet, first in first out
        self._tree_of: dict[int, _TreeRows] = {}  # queued or live seq_id -> its tree
        self._open_trees: dict[int, _TreeRows] = {}  # tree id -> tree, until done
        self._rows: list[_Row] = []  # live rows in creation order (forks append)
        self._live: dict[int, _Row] = {}  # seq_id -> its row in `_rows`
        self._in_slot: dict[int, _Row] = {}  # slot -> the row that owns it
        self._seen: set[int] = set()  # every seq_id ever added or forked, to reject reuse
        self._cache = SlotCache(row_block)
        self._logits: torch.Tensor | None = None  # [slots, vocab] float32, each slot's last forward
        self._row_columns = 0  # the most columns a live or queued tree's row can fill
        self._forward_rows: int | None = None  # after an out-of-memory: most rows per forward
        self._sample_rows: int | None = None  # likewise for the sampling step
        self._retried = False  # an out-of-memory at the smallest size was retried this step

    # ---- protocol ----------------------------------------------------------------------------

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def add(self, trees: Sequence[NewTree]) -> None:
        """Queue trees; all are checked first, so a bad one queues none."""
        ids: set[int] = set()
        tree_ids: set[int] = set()
        for tree in trees:
            if tree.tree_id in self._open_trees or tree.tree_id in tree_ids:
                raise ValueError(f"tree id {tree.tree_id} is already in use")
            tree_ids.add(tree.tree_id)
            for root in tree.roots:
                if root.seq_id in self._seen or root.seq_id in ids:
                    raise ValueError(f"sequence id {root.seq_id} is already in use")
                ids.add(root.seq_id)
        if self._budget is not None and trees:
            self._size_batch(trees)
        for tree in trees:
            rows = self._open_trees[tree.tree_id] = _TreeRows(tree, list(tree.roots))
            for root in tree.roots:
                self._claim(root.seq_id)
                self._tree_of[root.seq_id] = rows
            self._waiting.append(rows)

    def has_unfinished(self) -> bool:
        return bool(self._waiting or self._rows)

    @torch.inference_mode()
    def step(self) -> list[TokenStep]:
        if self._rows:
            self._compact()  # 1) holes of a row block or more: move the highest rows down
            self._decode()  # 2) feed the tokens at t: logits for t + 1
        self._admit()  # 3) prefill queued roots: logits for their position 0
        steps = self._sample_and_report()  # 4) every live row: one token, top-K logprobs
        if steps:  # rows went a token further: a later error may be retried again
            self._retried = False
        return steps

    @torch.inference_mode()
    def fork(self, fork: Fork) -> int | None:
        parent = self._row(fork.parent)
        if fork.position != parent.position:
            raise ValueError(
                f"fork of {fork.parent} at position {fork.position}, but its last reported "
                f"position is {parent.position} (forks happen in lockstep)"
            )
        self._claim(fork.child)
        key = _row_key(fork.child_seed)
        child_token = fork.child_token
        if child_token is None:  # sample policy: draw from the parent's distribution at p
            scores = self._warp(self._logits[parent.slot : parent.slot + 1])
            child_token = int(self._sample(scores, [key], [fork.position])[0])
        slot = self._take_slot()
        self._cache.copy(parent.slot, slot, parent.filled)  # the parent's row only
        self._logits[slot] = self._logits[parent.slot]
        parent.token = fork.parent_token
        self._add_row(_Row(fork.child, key, slot, parent.filled, parent.position, child_token))
        tree = self._tree_of[fork.child] = self._tree_of[fork.parent]  # the parent's tree
        tree.live += 1
        return child_token

    def finish(self, seq_id: int) -> None:
        """Drop a live row (its slot is free at once; no other row moves) or a queued root.
        Finishing an already finished sequence does nothing."""
        if seq_id not in self._seen:
            raise KeyError(f"unknown sequence {seq_id}")
        tree = self._tree_of.pop(seq_id, None)
        if tree is None:
            return  # already finished
        tree.finished += 1  # its reservation shrinks: the tree can never hold it again
        row = self._live.pop(seq_id, None)
        if row is None:  # queued
            tree.queued = [r for r in tree.queued if r.seq_id != seq_id]
            if not tree.queued:
                self._waiting.remove(tree)
        else:
            tree.live -= 1
            self._rows.remove(row)
            self._release_slot(row.slot)
            if not self._rows:
                self._clear_batch()  # nothing live: the cache's memory goes now
        if not tree.live and not tree.queued:
            del self._open_trees[tree.tree.tree_id]  # done: its id may be used again

    # ---- the step's parts --------------------------------------------------------------------

    def _compact(self) -> None:
        """Move the highest rows into the lowest free slots while the holes below the top add
        up to a row block: a forward pays for every slot up to the top."""
        cache = self._cache
        while cache.top() - len(self._rows) >= self.row_block:
            row = self._in_slot[cache.top() - 1]
            slot = self._take_slot()  # the lowest free one, below the top
            cache.copy(row.slot, slot, row.filled)
            self._release_slot(row.slot)
            row.slot = slot
            self._in_slot[slot] = row

    def _decode(self) -> None:
        """Feed every row's token at its last reported position: forwards over slot ranges of
        whole row blocks (dummy rows in the holes), then every row is one column further."""
        most = max(row.filled for row in self._rows) + 1
        self._grow_columns(most)
        size = round_up(self._cache.top(), self.row_block)
        tokens, columns, live = [0] * size, [0] * size, [False] * size
        for row in self._rows:
            tokens[row.slot], columns[row.slot], live[row.slot] = row.token, row.filled, True
        ids = torch.tensor(tokens, device=self.device)[:, None]
        positions = torch.tensor(columns, device=self.device)
        lo = 0
        while lo < size:
            hi = min(size, lo + (self._forward_rows or size))
            if not any(live[lo:hi]):  # only holes here
                lo = hi
                continue
            try:
                self._decode_slots(lo, hi, ids[lo:hi], positions[lo:hi], max(columns[lo:hi]) + 1)
            except Exception as err:  # noqa: BLE001 (re-raised unless out of memory)
                self._recover(err, "decode forward", hi - lo)
                continue  # the same slots again, in smaller forwards
            lo = hi
        for row in self._rows:
            row.filled += 1

    def _decode_slots(self, lo: int, hi: int, ids: torch.Tensor, positions: torch.Tensor,
                      width: int) -> None:
        """One forward of slots [lo, hi): each writes its token at its column and reads its
        own columns up to it (`width`: one past the highest, rounded up to COLUMN_ALIGN)."""
        width = round_up(width, COLUMN_ALIGN)
        seen = torch.arange(width, device=self.device)[None, :] <= positions[:, None]
        rows = torch.arange(lo, hi, device=self.device)
        self._cache.plan = ForwardPlan(lo, hi, width, columns=positions, rows=rows)
        logits = self._forward(ids, positions[:, None], seen[:, None, None, :])
        self._logits[lo:hi] = logits[:, -1]

    def _admit(self) -> None:
        """Prefill the queued trees whose reservations fit under `max_rows`."""
        if not self._waiting:
            return
        reserved = sum(t.reserved() for t in {self._tree_of[row.seq_id] for row in self._rows})
        admitted: list[_TreeRows] = []
        while self._waiting:
            tree = self._waiting[0]
            need = tree.reserved(live=len(tree.queued))
            if (self._rows or admitted) and reserved + need > self.max_rows:
                break  # FIFO: a tree that does not fit waits; nothing overtakes it
            reserved += need
            admitted.append(self._waiting.popleft())
        prefilled: dict[tuple[int, ...], _Row] = {}  # prompt -> the row holding its prefill
        for i, tree in enumerate(admitted):
            try:
                self._start(tree, prefilled)
            except Exception as err:  # noqa: BLE001 (re-raised unless out of memory)
                for later in reversed(admitted[i:]):  # back to the head of the queue, in order
                    self._waiting.appendleft(later)
                self._recover(err, "prefill", len(self._rows))  # the next step admits again
                return

    def _start(self, tree: _TreeRows, prefilled: dict[tuple[int, ...], _Row]) -> None:
        """Give each queued root of `tree` a slot holding its prompt's cache and logits.

        Each distinct prompt is prefilled once (M full-parallel roots share one), then its
        slot is copied, as a fork would: prefill is compute-bound, a copy is not. Nothing is
        kept of a tree whose start fails."""
        prompt = tree.tree.prompt
        self._row_columns = max(self._row_columns, tree.columns)
        rows: list[_Row] = []
        try:
            self._cache.reserve(self._cache.used + tree.reserved(live=len(tree.queued)),
                                self._cache.columns)
            self._fit_logits()
            for root in tree.queued:
                row = _Row(root.seq_id, _row_key(root.seed), self._take_slot(), len(prompt))
                rows.append(row)
                source = prefilled.get(prompt)
                if source is None:
                    self._prefill(prompt, row.slot)
                    prefilled[prompt] = row
                else:
                    self._cache.copy(source.slot, row.slot, len(prompt))
                    self._logits[row.slot] = self._logits[source.slot]
        except BaseException:
            for row in rows:
                self._release_slot(row.slot)
                if prefilled.get(prompt) is row:
                    del prefilled[prompt]
            raise
        for row in rows:
            self._add_row(row)
        tree.live, tree.queued = len(rows), []

    def _prefill(self, prompt: tuple[int, ...], slot: int) -> None:
        """One prompt alone into `slot`: padded to a multiple of ROW_BLOCK tokens (the padding
        comes after it, so causality hides it), the logits of its last token kept."""
        length = len(prompt)
        padded = round_up(length, self.row_block)
        width = round_up(padded, COLUMN_ALIGN)
        self._grow_columns(max(width, length + 1))
        ids = torch.tensor([list(prompt) + [0] * (padded - length)], device=self.device)
        queries = torch.arange(padded, device=self.device)
        seen = torch.arange(width, device=self.device)[None, :] <= queries[:, None]  # causal
        # the lm head reads a row block of positions ending at the last real one
        keep = torch.arange(length - self.row_block, length, device=self.device).clamp(min=0)
        self._cache.plan = ForwardPlan(slot, slot + 1, width, prefill=padded)
        logits = self._forward(ids, queries.clamp(max=length - 1)[None], seen[None, None], keep)
        self._logits[slot] = logits[0, -1]

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                 keep: torch.Tensor | None = None) -> torch.Tensor:
        """The model over the slot cache, with `slot_attention` for this call only (the
        weights may serve other code, e.g. lm-eval's loglikelihood, between steps)."""
        config = self.model.config
        previous = config._attn_implementation
        config._attn_implementation = ATTENTION
        try:
            out = self.model(
                input_ids=ids,  # [rows, q]
                attention_mask=mask,  # [rows, 1, q, width] bool: returned as is by the model
                position_ids=positions,  # [rows, q]: the column of each token
                use_cache=True,
                **{self._cache_kwarg: self._cache},
                **({} if keep is None else {"logits_to_keep": keep}),
            )
        finally:
            config._attn_implementation = previous
        return out.logits

    def _sample_and_report(self) -> list[TokenStep]:
        """Sample every row's next token with its own seed and report it with top-K (in
        groups of rows after an out-of-memory: every row's numbers are its own)."""
        rows = self._rows
        steps: list[TokenStep] = []
        start = 0
        while start < len(rows):
            group = rows[start : start + (self._sample_rows or len(rows))]
            try:
                steps += self._report(group)
            except Exception as err:  # noqa: BLE001 (re-raised unless out of memory)
                self._recover(err, "sampling step", len(group))
                continue
            start += len(group)
        return steps

    def _report(self, rows: list[_Row]) -> list[TokenStep]:
        """`rows`' tokens and top-K; the rows advance only once every tensor is computed."""
        slots = [row.slot for row in rows]
        if slots == list(range(slots[0], slots[0] + len(slots))):  # rows in slot order: a view
            logits = self._logits[slots[0] : slots[0] + len(slots)]  # [rows, vocab]
        else:
            logits = self._logits.index_select(0, torch.tensor(slots, device=self.device))
        scores = self._warp(logits)  # temperature/top-k/top-p/min-p applied
        tokens = self._sample(scores, [r.key for r in rows], [r.position + 1 for r in rows]).tolist()
        settings = self.settings
        if not settings.reads_logprobs:
            steps = []
            for row, token in zip(rows, tokens):
                row.position, row.token = row.position + 1, token
                steps.append(TokenStep(row.seq_id, row.position, token, (), ()))
            return steps
        logprobs = (scores if settings.processed_entropy else logits).log_softmax(-1)
        top = logprobs.topk(min(settings.logprobs_k, logprobs.shape[-1]), -1)  # [rows, max(K, k)]
        if not settings.logprobs:  # a run that never branches: the confidence alone, on the device
            confidences = (-top.values.clamp(min=LOGPROB_FLOOR).mean(-1)).tolist()  # [rows]
            steps = []
            for row, token, confidence in zip(rows, tokens, confidences):
                row.position, row.token = row.position + 1, token
                steps.append(TokenStep(row.seq_id, row.position, token, (), (), None, confidence))
            return steps
        k = settings.entropy_k  # the top-K reported and its entropy; the confidence reads its k
        top_logprobs = top.values.cpu().numpy()
        entropies = topk_entropies(top_logprobs[:, :k]).tolist()  # all rows at once, in float64
        confidences = (topk_confidences(top_logprobs, settings.resolved_confidence_k).tolist()
                       if settings.confidence else [None] * len(rows))
        top_ids, top_logprobs = top.indices[:, :k].tolist(), top_logprobs[:, :k].tolist()
        steps = []
        for row, token, ids, lps, entropy, confidence in zip(rows, tokens, top_ids,
                                                            top_logprobs, entropies, confidences):
            row.position, row.token = row.position + 1, token
            steps.append(TokenStep(row.seq_id, row.position, token, tuple(ids), tuple(lps),
                                   entropy, confidence))
        return steps

    # ---- memory ------------------------------------------------------------------------------

    def _size_batch(self, trees: Sequence[NewTree]) -> None:
        """max_rows=auto: the rows of the longest row these trees (and earlier ones) may reach
        that the memory holds. The first trees must fit at their cap."""
        budget = self._budget
        self._row_columns = max(self._row_columns,
                                *(len(t.prompt) + t.max_new_tokens for t in trees))
        columns = round_up(self._row_columns, COLUMN_ALIGN)
        vocab = _vocab_size(self.model)
        rows = budget.rows(columns, vocab)
        if self.max_rows is None:
            need = max(t.cap for t in trees)
            if rows < need:
                raise MemoryBudgetError(
                    f"max_rows=auto: {budget.device} has room for {rows} rows of {columns} tokens "
                    f"({budget.describe(columns, vocab)}) but one tree may grow to {need} "
                    "sequences; lower max_seqs or max_new_tokens, use a smaller dtype, or "
                    "--backend vllm (its paged cache holds what rows use, not their full "
                    "length)")
            self.max_rows = rows
        else:
            self.max_rows = max(1, min(self.max_rows, rows))
        self.stats.max_rows = self.max_rows
        line = f"max_rows=auto: {budget.describe(columns, vocab)}"
        if self.stats.announced != line:
            self.stats.announced = line
            print(f"eager-eval: {line}", file=sys.stderr, flush=True)

    def _recover(self, err: BaseException, where: str, rows: int) -> None:
        """After an out-of-memory error (anything else is re-raised): free what the device's
        allocator caches, halve the rows of the forwards (or of the sampling groups), admit no
        more rows than are live. At the smallest size (one row block; one row when sampling; a
        prefill with nothing else live) the same work is retried once per step, since freeing
        the allocator's cache may be enough; a second error there is raised."""
        if not is_out_of_memory(err):
            raise err
        smallest = (where == "decode forward" and rows <= self.row_block
                    or where == "sampling step" and rows <= 1 or where == "prefill" and not rows)
        if smallest:
            if self._retried:
                raise err
            self._retried = True
        self.stats.oom_recoveries += 1
        _empty_device_cache(self.device)
        if where == "decode forward" and not smallest:
            self._forward_rows = round_up(max(self.row_block, rows // 2), self.row_block)
        elif where == "sampling step" and not smallest:
            self._sample_rows = max(1, rows // 2)
        live = len(self._rows)
        if live:
            self.max_rows = min(self.max_rows, live)
        self.stats.max_rows = self.max_rows
        print(f"eager-eval: out of memory in a {where} ({live} live rows on {self.device}); "
              f"going on with max_rows={self.max_rows}"
              + (f", forwards of {self._forward_rows} rows" if self._forward_rows else "")
              + " (the trees do not change)", file=sys.stderr, flush=True)

    def _grow_columns(self, needed: int) -> None:
        """Make the cache `needed` columns wide (by chunks, up to the longest row's end)."""
        most = round_up(max(self._row_columns, needed), COLUMN_ALIGN)
        try:
            self._cache.grow_columns(needed, most)
        except Exception as err:  # noqa: BLE001
            if not is_out_of_memory(err):
                raise
            _empty_device_cache(self.device)
            try:
                self._cache.grow_columns(needed, needed)  # the least that lets the rows go on
            except Exception as again:  # noqa: BLE001
                if not is_out_of_memory(again):
                    raise
                raise MemoryBudgetError(
                    f"out of memory growing the KV cache to {needed} columns for "
                    f"{len(self._rows)} live rows on {self.device}; set max_rows lower "
                    f"(it was {self.max_rows}) or max_new_tokens") from again
            self.stats.oom_recoveries += 1

    def _take_slot(self) -> int:
        slot = self._cache.take()
        self._fit_logits()
        return slot

    def _release_slot(self, slot: int) -> None:
        self._cache.release(slot)
        self._in_slot.pop(slot, None)

    def _fit_logits(self) -> None:
        """One logits row per cache slot (float32, the vocabulary wide)."""
        slots = self._cache.slots
        if self._logits is not None and self._logits.shape[0] >= slots:
            return
        logits = torch.zeros(slots, _vocab_size(self.model), dtype=torch.float32,
                             device=self.device)
        if self._logits is not None:
            logits[: self._logits.shape[0]] = self._logits
        self._logits = logits

    def _warp(self, logits: torch.Tensor) -> torch.Tensor:
        """Temperature, top-k, top-p, then min-p (HF's warper order), as -inf masks. [n, vocab]"""
        scores = logits / self.settings.temperature if self.settings.temperature > 0 else logits
        if self.settings.top_k > 0 and self.settings.top_k < scores.shape[-1]:
            kth = scores.topk(self.settings.top_k, -1).values[:, -1:]  # [n, 1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.settings.top_p < 1.0:
            sorted_scores, order = scores.sort(-1, descending=True)
            probs = sorted_scores.softmax(-1)
            # drop a token once the more probable ones already hold top_p (the first always stays)
            drop = (probs.cumsum(-1) - probs) >= self.settings.top_p
            drop[:, 0] = False
            scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        if self.settings.min_p > 0:
            probs = scores.softmax(-1)  # the top token always stays (its ratio is 1)
            floor = self.settings.min_p * probs.max(-1, keepdim=True).values  # [n, 1]
            scores = scores.masked_fill(probs < floor, float("-inf"))
        return scores

    def _sample(self, scores: torch.Tensor, keys: Sequence[int],
                positions: Sequence[int]) -> torch.Tensor:
        """One token per row by inverse CDF, with the row's uniform at that position.

        One draw per row (not one per vocabulary entry, as Gumbel noise needs) is ~4x cheaper on
        CPU at 32 rows x 49k vocab; float64 keeps the CDF exact enough for p ~ 1e-12.
        """
        if self.settings.temperature == 0:
            return scores.argmax(-1)  # greedy: no draw
        u = counter_uniforms(torch.tensor(keys, dtype=torch.int64, device=self.device),
                             torch.tensor(positions, dtype=torch.int64, device=self.device))
        # [n, vocab]; masked tokens add 0 (cumsum casts to float64 as it goes: the same bits as
        # .double().cumsum(), without a float64 copy of the probabilities)
        cdf = torch.cumsum(scores.softmax(-1), -1, dtype=torch.float64)
        target = (u.to(cdf.device) * cdf[:, -1])[:, None]  # [n, 1], below the row's total
        return torch.searchsorted(cdf, target, right=True)[:, 0].clamp(max=cdf.shape[-1] - 1)

    # ---- helpers -----------------------------------------------------------------------------

    def _clear_batch(self) -> None:
        self._cache = SlotCache(self.row_block)
        self._logits = None
        self._in_slot.clear()

    def _claim(self, seq_id: int) -> None:
        if seq_id in self._seen:
            raise ValueError(f"sequence id {seq_id} is already in use")
        self._seen.add(seq_id)

    def _row(self, seq_id: int) -> _Row:
        if seq_id not in self._live:
            raise KeyError(f"sequence {seq_id} is not live")
        return self._live[seq_id]

    def _add_row(self, row: _Row) -> None:
        self._rows.append(row)
        self._live[row.seq_id] = row
        self._in_slot[row.slot] = row


def _vocab_size(model: Any) -> int:
    """Rows of the output layer (the logits' width)."""
    layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if layer is not None and getattr(layer, "weight", None) is not None:
        return int(layer.weight.shape[0])
    config = getattr(model.config, "text_config", None) or model.config
    return int(config.vocab_size)


def _empty_device_cache(device: torch.device) -> None:
    """Give the blocks torch's allocator keeps back to the device (after an out-of-memory)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch.mps, "empty_cache"):
        torch.mps.empty_cache()
