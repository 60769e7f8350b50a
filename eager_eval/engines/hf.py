"""The transformers backend: one batched step loop whose rows fork by copying KV-cache rows.

`generate()` cannot add rows to a running batch, so this is a hand-written loop
(ENGINES.md section 2). Every live sequence is one row of a left-padded batch: its KV cache
row, attention-mask row, next position id and the logits of its last forward. One forward per
`step()` serves every row of every prompt.

- **Admission.** `add()` queues trees; each `step()` admits queued trees whole (first in, first
  out, nothing overtakes), prefills them together and merges their cache into the running one
  (the shorter side is left-padded; one copy of the cache per admission, about the cost of one
  decode step): the runner advances a tree in lockstep, so a root left in the queue would stall
  its admitted siblings.
- **`max_rows` bounds live rows.** Forks are never refused (the tree must not depend on
  batching), so each live tree reserves the rows it may still need: `NewTree.cap` minus its
  finished sequences. A tree is admitted only while all reservations fit in `max_rows`, so
  live rows never exceed it, except that a tree is always admitted into an empty batch (one
  tree larger than `max_rows` runs alone). In eager modes a tree reserves its cap (M) from its
  first row: raise `max_rows` to keep more trees in flight; an unused reservation costs no
  memory, as the cache only holds live rows. A cache whose layers are not plain
  `DynamicLayer`s (sliding windows, linear attention) cannot be merged: then roots are
  admitted in waves, only when no row is live.
- **Forks and drops.** `fork()` and `finish()` only edit the row list; the next `step()` applies
  all of them in ONE `cache.reorder_cache(idx)` (idx repeats a forked parent's row and omits
  dropped rows), so the prefix is never recomputed and dropped rows' memory is freed. Columns
  that became padding for every remaining row are then cut off the left.
- **Sampling.** A row's token at position t is drawn with one uniform `unit_uniform(seed, t)`
  (eager_eval.core.seeds: a counter-based hash of the sequence's seed and the position, computed
  for all rows at once on the device) by inverse CDF (`searchsorted` on the row's cumulative
  probabilities). A sequence's tokens therefore depend only on its own seed and logits, never
  on which other rows exist (METHOD.md section 8), and no per-row generator state has to
  follow a row through forks (a per-row `torch.Generator` cost one kernel launch per row per
  step: ~10 ms a step at the paper's 960 rows on a GPU). The ScriptedBackend draws with the
  same uniforms. Temperature 0 is argmax and draws nothing.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from eager_eval.core.backend import Fork, NewTree, Root, TokenStep
from eager_eval.engines.tokens import end_token_ids, token_pieces
from eager_eval.core.entropy import LOGPROB_FLOOR, topk_confidences, topk_entropies
from eager_eval.core.sampling import SamplingSettings
from eager_eval.core.seeds import hash64


@dataclass(eq=False)  # identity: rows are removed from the list by `is`
class _Row:
    """One live sequence: where it reads in the batch tensors and what it feeds next."""

    seq_id: int
    key: int
    """hash64(seed) as a signed int64: the row's half of its counter-based uniforms."""
    slot: int
    """Row of the batch tensors (cache, mask, position ids, logits) this sequence reads; a new
    child points at its parent's slot until the next step's reorder gives it its own."""
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
    """`Backend` over a transformers causal LM (CPU or CUDA). See the module docstring."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        settings: SamplingSettings | None = None,
        *,
        max_rows: int = 64,
        device: str | None = None,
        **sampling: Any,
    ):
        """`settings` (the run's: `EagerConfig.sampling`), or its fields as keywords
        (`entropy_k=`, `temperature=`, ...) for a backend used on its own."""
        if settings is None:
            settings = SamplingSettings(**sampling)
        elif sampling:
            raise TypeError(f"pass settings or sampling keywords, not both (got {sorted(sampling)})")
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.settings = settings.sampling  # an EagerConfig is one too: keep only what samples
        self.model = model.eval()
        self.tokenizer = tokenizer
        if device is not None:
            self.model = self.model.to(device)
        self.device = self.model.device
        self.max_rows = max_rows
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
        self._seen: set[int] = set()  # every seq_id ever added or forked, to reject reuse
        self._reshape = False  # a fork or drop since the last reorder
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [slots, columns] 1 = real token, 0 = left pad
        self._pos: torch.Tensor | None = None  # [slots] position id of the next fed token
        self._logits: torch.Tensor | None = None  # [slots, vocab] float32, last forward

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
        self._apply_forks_and_drops()  # 1) one reorder for all of the last step's forks/drops
        if self._rows:
            self._decode()  # 2) feed the tokens at t: logits for t + 1
        self._admit()  # 3) prefill queued roots: logits for their position 0
        return self._sample_and_report()  # 4) every live row: one token, top-K logprobs

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
        parent.token = fork.parent_token
        self._add_row(_Row(fork.child, key, parent.slot, parent.position, child_token))
        tree = self._tree_of[fork.child] = self._tree_of[fork.parent]  # the parent's tree
        tree.live += 1
        self._reshape = True
        return child_token

    def finish(self, seq_id: int) -> None:
        """Drop a live row (its memory goes at the next step's reorder, or now when it was the
        last one) or a queued root. Finishing an already finished sequence does nothing."""
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
            self._reshape = True
            if not self._rows:
                self._clear_batch()  # nothing left to reorder: free the cache now
        if not tree.live and not tree.queued:
            del self._open_trees[tree.tree.tree_id]  # done: its id may be used again

    # ---- the step's parts --------------------------------------------------------------------

    def _apply_forks_and_drops(self) -> None:
        """Give every row its own slot again: repeat forked parents' rows, omit dropped ones."""
        if not self._reshape:
            return
        self._reshape = False
        if not self._rows:
            self._clear_batch()
            return
        idx = torch.tensor([row.slot for row in self._rows], device=self.device)  # [rows]
        self._cache.reorder_cache(idx)
        self._mask, self._pos = self._mask[idx], self._pos[idx]
        self._logits = None  # stale: the forward that follows every reorder replaces it
        for slot, row in enumerate(self._rows):
            row.slot = slot
        self._trim_left_padding()

    def _decode(self) -> None:
        """One forward for all rows: feed each row's token at its last reported position."""
        rows = len(self._rows)
        next_ids = torch.tensor([row.token for row in self._rows], device=self.device)[:, None]
        self._mask = torch.cat([self._mask, self._mask.new_ones(rows, 1)], -1)  # [rows, cols+1]
        out = self.model(
            input_ids=next_ids,  # [rows, 1]
            attention_mask=self._mask,
            position_ids=self._pos[:, None],  # [rows, 1]; never the default (left padding)
            use_cache=True,
            **{self._cache_kwarg: self._cache},
        )
        self._pos = self._pos + 1
        self._logits = out.logits[:, -1].float()  # [rows, vocab]

    def _admit(self) -> None:
        """Prefill the queued trees whose reservations fit under `max_rows`; merge them in."""
        if not self._waiting or (self._rows and not self._mergeable()):
            return
        reserved = sum(t.reserved() for t in {self._tree_of[row.seq_id] for row in self._rows})
        admitted: list[tuple[Root, tuple[int, ...]]] = []  # (root, its tree's prompt)
        while self._waiting:
            tree = self._waiting[0]
            need = tree.reserved(live=len(tree.queued))
            if (self._rows or admitted) and reserved + need > self.max_rows:
                break  # FIFO: a tree that does not fit waits; nothing overtakes it
            reserved += need
            self._waiting.popleft()
            admitted += [(root, tree.tree.prompt) for root in tree.queued]
            tree.live, tree.queued = len(tree.queued), []
        if not admitted:
            return
        # Each distinct prompt is prefilled once (M full-parallel roots share one prompt), then
        # its cache row is repeated, as a fork would: prefill is compute-bound, decode is not.
        prompts = list(dict.fromkeys(prompt for _, prompt in admitted))
        width = max(map(len, prompts))
        ids = torch.zeros(len(prompts), width, dtype=torch.long)  # pad id 0: masked anyway
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, prompt in enumerate(prompts):  # left padding: every last token in the last column
            ids[i, width - len(prompt) :] = torch.tensor(prompt)
            mask[i, width - len(prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids,  # [distinct prompts, width]
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),  # pads get 0; real tokens 0..len-1
            use_cache=True,
            **{self._cache_kwarg: cache},
            logits_to_keep=1,
        )
        row_of = {prompt: i for i, prompt in enumerate(prompts)}
        idx = torch.tensor([row_of[p] for _, p in admitted], device=self.device)  # [new]
        if len(prompts) < len(admitted):
            cache.reorder_cache(idx)
        mask, logits = mask[idx], out.logits[idx, -1].float()  # [new, width], [new, vocab]
        pos = mask.sum(-1)  # [new] next position id = prompt length
        start = len(self._rows)
        if self._rows:
            cache, mask = self._merge(cache, mask)
            pos, logits = torch.cat([self._pos, pos]), torch.cat([self._logits, logits])
        self._cache, self._mask, self._pos, self._logits = cache, mask, pos, logits
        for i, (root, _) in enumerate(admitted):
            self._add_row(_Row(root.seq_id, _row_key(root.seed), start + i))

    def _sample_and_report(self) -> list[TokenStep]:
        """Sample every row's next token with its own seed and report it with top-K."""
        if not self._rows:
            return []
        assert all(row.slot == i for i, row in enumerate(self._rows)), "reorder before sampling"
        scores = self._warp(self._logits)  # [rows, vocab] temperature/top-k/top-p applied
        rows = self._rows
        tokens = self._sample(scores, [r.key for r in rows], [r.position + 1 for r in rows]).tolist()
        settings = self.settings
        if not settings.reads_logprobs:
            steps = []
            for row, token in zip(self._rows, tokens):
                row.position, row.token = row.position + 1, token
                steps.append(TokenStep(row.seq_id, row.position, token, (), ()))
            return steps
        logprobs = (scores if settings.processed_entropy else self._logits).log_softmax(-1)
        top = logprobs.topk(min(settings.logprobs_k, logprobs.shape[-1]), -1)  # [rows, max(K, k)]
        if not settings.logprobs:  # a run that never branches: the confidence alone, on the device
            confidences = (-top.values.clamp(min=LOGPROB_FLOOR).mean(-1)).tolist()  # [rows]
            steps = []
            for row, token, confidence in zip(self._rows, tokens, confidences):
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
        for row, token, ids, lps, entropy, confidence in zip(self._rows, tokens, top_ids,
                                                            top_logprobs, entropies, confidences):
            row.position, row.token = row.position + 1, token
            steps.append(TokenStep(row.seq_id, row.position, token, tuple(ids), tuple(lps),
                                   entropy, confidence))
        return steps

    # ---- sampling ----------------------------------------------------------------------------

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
        cdf = scores.softmax(-1).double().cumsum(-1)  # [n, vocab]; masked tokens add 0
        target = (u.to(cdf.device) * cdf[:, -1])[:, None]  # [n, 1], below the row's total
        return torch.searchsorted(cdf, target, right=True)[:, 0].clamp(max=cdf.shape[-1] - 1)

    # ---- helpers -----------------------------------------------------------------------------

    def _merge(self, cache: DynamicCache, mask: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
        """Stack the running batch over newly prefilled rows, left-padding the shorter side."""
        width = max(self._mask.shape[1], mask.shape[1])

        def left_pad(x: torch.Tensor, dim_from_end: int) -> torch.Tensor:  # pad to `width`
            pad = [0, 0] * (dim_from_end - 1) + [width - x.shape[-dim_from_end], 0]
            return F.pad(x, pad)

        # keys/values: [rows, kv heads, columns, head dim]
        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([left_pad(old.keys, 2), left_pad(new.keys, 2)])
            old.values = torch.cat([left_pad(old.values, 2), left_pad(new.values, 2)])
        return self._cache, torch.cat([left_pad(self._mask, 1), left_pad(mask, 1)])

    def _trim_left_padding(self) -> None:
        """Cut columns that are padding in every row (after long rows finished)."""
        if not self._mergeable():
            return
        start = int(self._mask.any(0).int().argmax())  # first column some row attends to
        if start > 0:
            self._mask = self._mask[:, start:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]

    def _mergeable(self) -> bool:
        return self._cache is not None and all(
            type(layer) is DynamicLayer and layer.is_initialized for layer in self._cache.layers
        )

    def _clear_batch(self) -> None:
        self._cache = self._mask = self._pos = self._logits = None

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
