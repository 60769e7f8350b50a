"""How many rows the HF backend may hold: `max_rows=auto`, and what an out-of-memory error is.

`auto` sizes the batch from the memory the device has left once the weights are loaded and
what one row costs there: its KV cache at full length (prompt + max_new_tokens, rounded up to
the cache's column alignment) times the model's KV bytes per token (layers x KV heads x head
dim x 2 x dtype size), plus its logits and sampling buffers (a few vocabulary-sized vectors).
The free memory is `torch.cuda.mem_get_info` (plus what torch's caching allocator holds but
does not use) on CUDA, the MPS driver's recommended budget on Apple, and the available RAM on a
CPU (psutil when installed, else /proc/meminfo). Only a share of it is planned for, and the
result is capped (a CPU gains nothing from rows it can only run one after another).

This is an estimate made once per run; a forward that still runs out of memory is recovered by
the backend (`HFBackend`: smaller forwards, fewer admitted rows), which counts on `is_out_of_
memory` to tell such an error from any other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from eager_eval.common.errors import UserError

CPU_MEMORY_SHARE = 0.5
"""Share of the available RAM the cache may plan for: the OS, the tokenizer, the harness and
other processes live there too."""
DEVICE_MEMORY_SHARE = 0.85
"""Share of a GPU's free memory: activations and allocator fragmentation need the rest."""
CPU_ROW_CAP = 64
"""Most rows `auto` gives a CPU: a CPU step costs about in proportion to its rows past a few
dozen, so more rows add memory, not speed."""
DEVICE_ROW_CAP = 1024
"""Most rows `auto` gives a GPU (the paper's scale is 30 prompts x 32 sequences = 960)."""
ROW_BUFFERS = 6
"""Vocabulary-sized float32 vectors one row needs per step: its logits, warped scores,
probabilities, a float64 CDF (two) and top-K scratch."""


class MemoryBudgetError(ValueError, UserError):
    """max_rows cannot hold one tree (given, or what the memory allows under `auto`)."""


@dataclass
class BatchStats:
    """What an HF engine's backends chose and survived, for `HFEngine.info()`."""

    max_rows: int | None = None
    """The row limit the last run used (`auto` resolved; lowered after an out-of-memory)."""
    oom_recoveries: int = 0
    """Out-of-memory errors recovered from (a smaller forward, fewer admitted rows)."""
    announced: str | None = None
    """The last max_rows line printed (each new value is said once)."""


@dataclass(frozen=True)
class MemoryBudget:
    """What `auto` plans with: bytes it may use, where they were measured, per-token KV cost."""

    free_bytes: int
    """Memory available on the device when the run started."""
    usable_bytes: int
    """The share of it planned for (`CPU_MEMORY_SHARE`, `DEVICE_MEMORY_SHARE`)."""
    kv_bytes_per_token: int
    row_cap: int
    device: str

    def row_bytes(self, row_tokens: int, vocab_size: int) -> int:
        """One row at `row_tokens` cache columns: its keys and values plus its sampling buffers."""
        return row_tokens * self.kv_bytes_per_token + ROW_BUFFERS * 4 * vocab_size

    def rows(self, row_tokens: int, vocab_size: int) -> int:
        """Rows of `row_tokens` columns that fit (at most `row_cap`; 0 when none does)."""
        return min(self.row_cap, self.usable_bytes // max(1, self.row_bytes(row_tokens, vocab_size)))

    def describe(self, row_tokens: int, vocab_size: int) -> str:
        """'N rows (X GiB free on D, Y MiB a row of T tokens)': the start-up line's detail."""
        rows = self.rows(row_tokens, vocab_size)
        return (f"{rows} rows ({size(self.free_bytes)} free on {self.device}, "
                f"{size(self.row_bytes(row_tokens, vocab_size))} a row of {row_tokens} tokens"
                + (f", capped at {self.row_cap}" if rows == self.row_cap else "") + ")")


def kv_bytes_per_token(config: Any, dtype_size: int) -> int:
    """layers x KV heads x head dim x 2 (keys and values) x dtype size, from a transformers
    config (a multimodal model's text config when it has one)."""
    config = getattr(config, "text_config", None) or config
    layers = int(config.num_hidden_layers)
    heads = int(getattr(config, "num_attention_heads"))
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return layers * kv_heads * int(head_dim) * 2 * dtype_size


def free_memory(device: Any) -> int:
    """Bytes free for new tensors on `device` (a torch.device)."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # memory torch's caching allocator holds but no tensor uses is free for us too
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(0, cached))
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):  # torch >= 2.5
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return available_ram()


def available_ram() -> int:
    """The RAM the OS says new allocations can get without swapping."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # other POSIX systems: free pages (an underestimate: caches count as used)
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30  # no way to know: plan for a small machine


def measure_budget(model: Any, device: Any) -> MemoryBudget:
    """The budget `auto` plans with on `device`, for `model`'s KV cache (its dtype)."""
    free = free_memory(device)
    on_cpu = device.type == "cpu"
    share = CPU_MEMORY_SHARE if on_cpu else DEVICE_MEMORY_SHARE
    dtype_size = next(model.parameters()).element_size() if hasattr(model, "parameters") else 4
    return MemoryBudget(free, int(free * share), kv_bytes_per_token(model.config, dtype_size),
                        CPU_ROW_CAP if on_cpu else DEVICE_ROW_CAP, str(device))


def is_out_of_memory(err: BaseException) -> bool:
    """A failed allocation: torch.OutOfMemoryError (CUDA, MPS), or the CPU allocator's error
    (a RuntimeError in torch) - not any other RuntimeError."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text
        or "out of memory" in text.lower())


def size(n: float) -> str:
    """Bytes as people read them: '512 B', '3.2 MiB', '19.8 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


__all__ = ["BatchStats", "MemoryBudget", "MemoryBudgetError", "kv_bytes_per_token", "free_memory",
           "available_ram", "measure_budget", "is_out_of_memory", "size"]
