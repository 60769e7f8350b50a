"""The `hf` engine: transformers weights loaded once; each run gets an HFBackend over them.

`load` is what the registry calls (`ENGINES["hf"]`). It resolves the device (`auto`: CUDA,
then MPS, then CPU), sets torch's CPU threads where asked, loads the weights through
`models.load_model_and_tokenizer` (GGUF converted once and cached) and says on stderr which
device and dtype run. Nothing here imports torch at import time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from eager_eval.core.backend import Backend
from eager_eval.core.config import EagerConfig
from eager_eval.engines.hf_memory import BatchStats, MemoryBudgetError
from eager_eval.engines.registry import AUTO, CONTEXT_KEYS, EngineOptions, verify_on


@dataclass
class HFEngine:
    """transformers weights; each run gets an HFBackend over them."""

    name: str
    model: Any
    tokenizer: Any
    max_rows: int | str = AUTO
    """The setting: a count, or auto (each run sizes it from the free memory)."""
    stats: BatchStats = field(default_factory=BatchStats)
    """What the runs chose (max_rows) and survived (out-of-memory errors): `info()`."""

    @property
    def vocab_size(self) -> int | None:
        """Rows of the output layer: what the entropy's top-K and top_k choose among."""
        layer = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if layer is not None and getattr(layer, "weight", None) is not None:
            return int(layer.weight.shape[0])
        return getattr(self.model.config, "vocab_size", None)

    @property
    def context_length(self) -> int | None:
        config = self.model.config
        return next((int(getattr(config, k)) for k in CONTEXT_KEYS
                     if isinstance(getattr(config, k, None), int)), None)

    def verify(self, config: EagerConfig) -> None:
        """The settings' checks that need this model, a model the backend can run (its
        layers all attention: hf_slots.check_model) and a max_rows that holds one tree."""
        from eager_eval.engines.hf_slots import check_model

        check_model(self.model)
        verify_on(config, self.vocab_size, self.tokenizer)
        if self.max_rows != AUTO and self.max_rows < config.max_seqs:
            raise MemoryBudgetError(
                f"max_rows={self.max_rows} cannot hold one tree: a prompt's tree may grow to "
                f"max_seqs={config.max_seqs} sequences, decoded together; set max_rows to "
                f"{config.max_seqs} or more (or auto), or lower max_seqs")

    def new_backend(self, config: EagerConfig) -> Backend:
        from eager_eval.engines.hf import HFBackend

        self.verify(config)
        if self.max_rows != AUTO:
            self.stats.max_rows = self.max_rows
        return HFBackend(self.model, self.tokenizer, config.sampling, max_rows=self.max_rows,
                         stats=self.stats)

    def info(self) -> dict[str, Any]:
        """What ran: `max_rows` is the count the last run used (auto: what the free memory
        held, lowered after an out-of-memory error), `max_rows_setting` what was asked,
        `oom_recoveries` the out-of-memory errors its runs went on after."""
        chosen = self.stats.max_rows if self.stats.max_rows is not None else self.max_rows
        return {"backend": "hf", "model": self.name, "device": str(self.model.device),
                "dtype": str(self.model.dtype).replace("torch.", ""), "max_rows": chosen,
                "max_rows_setting": self.max_rows, "oom_recoveries": self.stats.oom_recoveries}


def set_cpu_threads(options: EngineOptions, device: str) -> None:
    """`threads`: N sets torch's CPU threads; auto gives it the CPUs other processes leave free
    (`threads.default_threads`: torch's one spinning thread per core is slow on a busy
    machine); None leaves torch's default. Only on a CPU."""
    if options.threads is None or not device.startswith("cpu"):
        return
    import torch

    from eager_eval.engines.threads import default_threads

    auto = options.threads == "auto"
    threads = default_threads(torch.get_num_threads()) if auto else int(options.threads)
    torch.set_num_threads(threads)
    print(f"torch threads: {threads}" + (" (free CPUs; set with --threads N)" if auto else ""),
          file=sys.stderr)


def load(model: str, options: EngineOptions, config: EagerConfig) -> HFEngine:
    """The registry's loader for `hf`."""
    from eager_eval.engines.models import (
        gguf_cache_dir,
        load_model_and_tokenizer,
        resolve_model,
    )

    resolved = resolve_model(model)  # fails fast, before torch is imported
    device = options.resolved_device()
    set_cpu_threads(options, device)
    if resolved.is_gguf and not (gguf_cache_dir(resolved) / "config.json").is_file():
        print(f"first use of {model}: converting its GGUF once (about 30-60 s) ...",
              file=sys.stderr, flush=True)
    loaded, tokenizer = load_model_and_tokenizer(model, device=device, dtype=options.dtype)
    engine = HFEngine(model, loaded, tokenizer, max_rows=options.max_rows)
    info = engine.info()
    print(f"eager-eval: {model} on {info['device']}"
          + (" (device=auto)" if options.device == "auto" else "") + f", {info['dtype']}",
          file=sys.stderr, flush=True)
    return engine


__all__ = ["HFEngine", "load", "set_cpu_threads"]
