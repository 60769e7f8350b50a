"""The HF backend's KV cache: one slot per live sequence, and an attention whose every row is
computed the same whatever else shares its batch.

**Layout.** Each attention layer keeps keys `[slots, kv_heads, columns, head_dim]` and values
alike. A sequence owns one slot; its token at absolute position p (prompt tokens first) sits in
column p, so a row never moves inside its slot and no row is padded on the left. The columns
grow by a chunk (`COLUMN_CHUNK`, or half the width, whichever is more) when the longest row
needs them: one copy per chunk, never one per step. A fork copies its parent's filled columns
into a free slot (one row, not the batch); a finished row only gives its slot back. A forward
reads the cache through views (`keys[lo:hi, :, :width]`): nothing is gathered or concatenated
per step.

**Batch invariance.** A row's numbers must not depend on which other rows exist. Measured on
torch 2.13's CPU kernels (MKL sgemm, AVX-512; tests/test_hf_invariance.py repeats the checks):

- a linear layer gives each row the same bits for any number of rows M that is a multiple of 4
  (with 2+ threads M = 5, 6, 7, 9, 10, 11 differ; M = 1 takes another kernel), and for any
  thread count: every forward here takes a multiple of `ROW_BLOCK` rows (a prefill a multiple
  of `ROW_BLOCK` tokens), padded with dummy rows;
- torch's `scaled_dot_product_attention` on a CPU gives a row other bits when the key width
  changes (any width not a multiple of 64, and across the 64-multiples as well with 2+ threads)
  and when the batch size or the thread count does; a plain matmul-softmax-matmul attention
  (`slot_attention` below) gives the same bits for every width >= 64 whatever its masked tail,
  every batch size and every thread count. So the backend attends through `slot_attention`
  with widths that are multiples of `COLUMN_ALIGN`;
- softmax, log-softmax, cumsum, norms and the rotary embedding work row by row.

Prefill runs one prompt at a time (its shapes depend on the prompt alone), so a row's whole
history is computed with shapes its own tree decides. On CUDA the same shapes are used, but
cuBLAS and the GPU's reductions may pick another kernel for another batch size or width: the
bits are not guaranteed there (docs/ARCHITECTURE.md, "The same tree whatever the batch").
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface

from eager_eval.common.errors import UserError

ROW_BLOCK = 8
"""Every forward takes a multiple of this many rows (decode) or tokens (prefill)."""
COLUMN_ALIGN = 64
"""Attention widths are multiples of this (below 64 columns CPU softmax takes another path)."""
COLUMN_CHUNK = 256
"""The cache's columns grow by at least this many at a time."""
PREFILL_QUERY_CHUNK = 512
"""Prefill attends at most this many query positions at a time ..."""
PREFILL_SCORES = 1 << 26
"""... and fewer when their float32 scores would pass this many (256 MiB): a long prompt's
scores never take more. A prefill's shapes still depend on its prompt alone."""
ATTENTION = "eager_eval_slots"
"""The attention implementation name the backend switches a model to during its forwards."""


class UnsupportedAttention(RuntimeError):
    """The model called the attention without the backend's mask (it does not pass it on)."""


@dataclass
class ForwardPlan:
    """Where one forward reads and writes: batch row i is slot lo + i."""

    lo: int
    hi: int
    width: int
    """Key columns attention reads (a multiple of COLUMN_ALIGN)."""
    columns: torch.Tensor | None = None
    """Decode: [hi - lo] column of each row's new token (its position)."""
    rows: torch.Tensor | None = None
    """Decode: the slots lo..hi-1 as a tensor (made once per forward, not per layer)."""
    prefill: int = 0
    """Prefill: tokens written at columns 0.. of slot lo (a one-row forward)."""


class SlotCache:
    """The KV cache object handed to the model as its `cache` (`update` is what the model
    calls; transformers 5.0-5.2x also asks `get_seq_length`)."""

    def __init__(self, row_block: int = ROW_BLOCK) -> None:
        self.row_block = row_block
        self.slots = 0
        """Slots of the layer tensors (a multiple of row_block)."""
        self.columns = 0
        self._layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._free: list[int] = []  # heap of free slots below `slots`
        self._used: set[int] = set()
        self.plan: ForwardPlan | None = None

    # ---- slots -------------------------------------------------------------------------------

    def take(self) -> int:
        """The lowest free slot (the cache grows by a row block when none is)."""
        if not self._free:
            self.reserve(self.slots + self.row_block, self.columns)
        slot = heapq.heappop(self._free)
        self._used.add(slot)
        return slot

    def release(self, slot: int) -> None:
        """Give a slot back; its columns stay as they are (masked for whoever takes it next)."""
        self._used.remove(slot)
        heapq.heappush(self._free, slot)

    @property
    def used(self) -> int:
        return len(self._used)

    def top(self) -> int:
        """One past the highest slot in use (0 when none is)."""
        return max(self._used) + 1 if self._used else 0

    # ---- memory ------------------------------------------------------------------------------

    def reserve(self, slots: int, columns: int) -> None:
        """Make room for `slots` slots of `columns` columns (rounded up; never shrinks).

        Each layer is reallocated and copied in turn, so the peak is the cache plus one
        layer; a failure part way (out of memory) leaves every layer usable, some larger.
        """
        slots = round_up(max(slots, self.slots), self.row_block)
        columns = round_up(max(columns, self.columns), COLUMN_ALIGN)
        if (slots, columns) == (self.slots, self.columns):
            return
        for index, (keys, values) in list(self._layers.items()):
            self._layers[index] = (_grown(keys, slots, columns), _grown(values, slots, columns))
        for slot in range(self.slots, slots):
            heapq.heappush(self._free, slot)
        self.slots, self.columns = slots, columns

    def grow_columns(self, needed: int, most: int) -> None:
        """At least `needed` columns: by a chunk or half the width, at most `most` (when more
        than needed), so a growing row costs one cache copy per chunk."""
        if needed <= self.columns:
            return
        target = max(needed, self.columns + max(COLUMN_CHUNK, self.columns // 2))
        self.reserve(self.slots, max(needed, min(target, most)))

    def copy(self, source: int, target: int, columns: int) -> None:
        """Slot `target`'s first `columns` columns become slot `source`'s (a fork, a move)."""
        for keys, values in self._layers.values():
            keys[target, :, :columns] = keys[source, :, :columns]
            values[target, :, :columns] = values[source, :, :columns]

    def bytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size()
                   for k, v in self._layers.values())

    # ---- the model's side --------------------------------------------------------------------

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *_: Any, **__: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this forward's keys and values (`self.plan` says where); return the views the
        attention reads: `[hi - lo, kv_heads, width, head_dim]`."""
        plan = self.plan
        layer = self._layers.get(layer_idx)
        if layer is None:
            layer = self._layers[layer_idx] = self._new_layer(key_states, value_states)
        keys, values = layer
        if plan.prefill:
            keys[plan.lo, :, : plan.prefill] = key_states[0]
            values[plan.lo, :, : plan.prefill] = value_states[0]
        else:
            keys[plan.rows, :, plan.columns] = key_states[:, :, 0]
            values[plan.rows, :, plan.columns] = value_states[:, :, 0]
        return keys[plan.lo : plan.hi, :, : plan.width], values[plan.lo : plan.hi, :, : plan.width]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """transformers < 5.2x derives a default `cache_position` from this when none is given;
        the rows here have positions of their own (position_ids, the mask), so it reads 0."""
        return 0

    def _new_layer(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # zeros, not empty: masked columns are multiplied by a probability of 0, and 0 * NaN
        # (what uninitialised memory may hold) would poison the row
        shape = (self.slots, keys.shape[1], self.columns)
        return (keys.new_zeros(*shape, keys.shape[-1]), values.new_zeros(*shape, values.shape[-1]))


def _grown(x: torch.Tensor, slots: int, columns: int) -> torch.Tensor:
    if x.shape[0] >= slots and x.shape[2] >= columns:
        return x  # grown already (an earlier attempt that ran out of memory part way)
    out = x.new_zeros(max(slots, x.shape[0]), x.shape[1], max(columns, x.shape[2]), x.shape[3])
    out[: x.shape[0], :, : x.shape[2]] = x
    return out


def round_up(n: int, multiple: int) -> int:
    """The least multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


def slot_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor, scaling: float | None = None,
                   dropout: float = 0.0, sliding_window: int | None = None,
                   softcap: float | None = None, s_aux: torch.Tensor | None = None,
                   **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention as transformers' eager attention computes it (scores, float32 softmax,
    weighted values), over the slot cache's views, without repeating KV heads.

    query `[rows, heads, q, head_dim]`; key/value `[rows, kv_heads, width, dim]`;
    attention_mask `[rows, 1, q, width]` bool, True where a query sees a key: each row's columns
    up to the query's position (the backend's causal mask). Returns `[rows, q, heads, dim]`.
    The query heads that share a KV head are stacked as extra query rows (GQA without a copy of
    the cache). Every reduction runs along one row's own columns, so its bits do not depend on
    the batch (module docstring). The variants some models ask for: a sliding window (keys
    older than `sliding_window` positions are masked), `softcap` (Gemma 2's tanh cap on the
    scores) and `s_aux` (gpt-oss's per-head sink logit in the softmax's denominator).
    """
    if attention_mask is None or attention_mask.dtype != torch.bool:
        raise UnsupportedAttention("the model did not pass the backend's attention mask through")
    rows, heads, q_len, head_dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    width = key.shape[2]
    scale = scaling if scaling is not None else head_dim**-0.5
    mask = attention_mask
    if sliding_window is not None and sliding_window < width:
        # a key is in the window while it is less than `sliding_window` positions back: the
        # mask is each row's prefix up to its position, so shifting it finds the older keys
        older = torch.zeros_like(mask)
        older[..., : width - sliding_window] = mask[..., sliding_window:]
        mask = mask & ~older
    chunk = max(1, min(PREFILL_QUERY_CHUNK, PREFILL_SCORES // (rows * heads * width)))
    outputs = []
    for start in range(0, q_len, chunk):
        stop = min(q_len, start + chunk)
        span = stop - start
        # query head h = j * group + i reads KV head j (transformers' repeat_kv order)
        grouped = query[:, :, start:stop].reshape(rows, kv_heads, group * span, head_dim)
        scores = torch.matmul(grouped, key.transpose(-1, -2)) * scale  # [rows, kv, g*span, W]
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        seen = mask[:, :, start:stop]  # [rows, 1, span, W]
        if group > 1 and span > 1:
            seen = seen.unsqueeze(2).expand(rows, 1, group, span, width).reshape(
                rows, 1, group * span, width)
        scores.masked_fill_(~seen, float("-inf"))
        if s_aux is None:
            probs = scores.softmax(-1, dtype=torch.float32).to(value.dtype)
        else:  # the sink takes its share of the probability and is dropped
            sinks = s_aux.reshape(1, kv_heads, group, 1, 1).expand(rows, kv_heads, group, span, 1)
            logits = torch.cat([scores, sinks.reshape(rows, kv_heads, group * span, 1).to(
                scores.dtype)], dim=-1)
            logits = logits - logits.max(dim=-1, keepdim=True).values
            probs = logits.softmax(-1, dtype=logits.dtype)[..., :-1].to(value.dtype)
        out = torch.matmul(probs, value)  # [rows, kv, g*span, dim]
        outputs.append(out.view(rows, kv_heads, group, span, value.shape[-1]))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=3)
    return out.reshape(rows, heads, q_len, value.shape[-1]).transpose(1, 2).contiguous(), None


class UnsupportedModelError(ValueError, UserError):
    """The model's layers are not all attention layers the slot cache can hold."""


SUPPORTED_LAYER_TYPES = frozenset({"full_attention", "sliding_attention"})


def check_model(model: Any) -> None:
    """Refuse, before anything runs, a model whose attention `slot_attention` cannot stand in
    for: one that does not call transformers' attention interface, or that has layers other
    than full or sliding-window attention (linear attention, state-space layers)."""
    config = getattr(model.config, "text_config", None) or model.config
    kind = getattr(config, "model_type", type(model).__name__)
    if not getattr(model, "_supports_attention_backend", False):
        raise UnsupportedModelError(
            f"the hf backend cannot run {kind} models: their attention does not go through "
            "transformers' attention interface; use --backend vllm")
    other = set(getattr(config, "layer_types", None) or ()) - SUPPORTED_LAYER_TYPES
    if other:
        raise UnsupportedModelError(
            f"the hf backend cannot run {kind} models: they have {', '.join(sorted(other))} "
            "layers (it holds attention layers' keys and values only); use --backend vllm")


AttentionInterface.register(ATTENTION, slot_attention)


__all__ = ["ROW_BLOCK", "COLUMN_ALIGN", "COLUMN_CHUNK", "ATTENTION", "ForwardPlan", "SlotCache",
           "round_up",
           "UnsupportedAttention", "UnsupportedModelError", "check_model", "slot_attention"]
