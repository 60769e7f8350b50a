"""Replicas on a simulated clock: the paper's scale priced by a GPU's roofline, no GPU needed.

`SimulatedFleet` is a fleet (core/worker.py) of R in-process `TreeWorker`s, each on its own
engine (`SimulatedBackend`, with its KV cache bounded by what the GPU holds), under the real
planner: the same placement, commands and events as the Ray replicas (engines/replicas.py),
with each batch of states pickled on the way back as Ray would. Every replica keeps a clock:
the fleet always steps the replica whose clock is earliest, charges the step what `StepCost`
says it takes on the named GPU and model, and delivers the planner's commands at that moment.
A run's simulated wall time is the clock at its last event. `lose` drops a replica at a
simulated time (its unfinished trees start again on the others: the fault path, in-process).

`StepCost`: one decode step reads the weights and every row's KV cache and does 2 x params
FLOPs per token (plus attention's); it takes max(bytes read / bandwidth, FLOPs / peak). The KV
cache holds what memory is left after the weights (`gpu_memory_utilization` of it, as vLLM):
the trees that do not fit wait or are preempted (SimulatedBackend's `kv_capacity`).
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from eager_eval.core.backend import Backend
from eager_eval.core.config import EagerConfig
from eager_eval.core.tree import PromptInput
from eager_eval.core.worker import (
    Batch,
    CapOrder,
    Placement,
    TreeOrder,
    TreeState,
    TreeWorker,
)
from eager_eval.engines.simulated import StepLoad


@dataclass(frozen=True)
class GPU:
    name: str
    memory: float
    """Bytes of device memory."""
    bandwidth: float
    """Bytes per second read from device memory."""
    flops: float
    """Dense bf16 FLOPs per second."""


@dataclass(frozen=True)
class ModelShape:
    name: str
    params: float
    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    bytes_per_param: int = 2

    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer, bf16."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_param


GPUS = {
    "h100": GPU("NVIDIA H100 SXM 80GB", 80e9, 3.35e12, 989e12),
    "h200": GPU("NVIDIA H200 141GB", 141e9, 4.8e12, 989e12),
    "a100": GPU("NVIDIA A100 SXM 80GB", 80e9, 2.04e12, 312e12),
}
"""Datasheet figures (HBM bandwidth, dense bf16 tensor-core peak)."""

MODELS = {
    "8b": ModelShape("8B (Qwen3-8B / DeepSeek-R1-0528-Qwen3-8B shape)", 8.19e9, 36, 8, 128, 4096),
    "4b": ModelShape("4B (Qwen3-4B shape)", 4.02e9, 36, 8, 128, 2560),
    "32b": ModelShape("32B (Qwen3-32B shape)", 32.8e9, 64, 8, 128, 5120),
}


@dataclass(frozen=True)
class StepCost:
    """Seconds of one engine step of `model` on `gpu` (see the module docstring)."""

    gpu: GPU
    model: ModelShape
    memory_utilization: float = 0.9
    activation_bytes: float = 4e9
    """Memory kept for activations and the CUDA graphs, beside weights and KV cache."""

    @property
    def kv_capacity(self) -> int:
        """KV-cache tokens one replica holds."""
        free = self.gpu.memory * self.memory_utilization - self.model.weight_bytes - self.activation_bytes
        if free <= 0:
            raise ValueError(f"{self.model.name} does not fit on one {self.gpu.name}")
        return int(free // self.model.kv_bytes_per_token)

    def seconds(self, load: StepLoad) -> float:
        if not load.rows and not load.prefill:
            return 0.0
        m = self.model
        read = m.weight_bytes + load.context * m.kv_bytes_per_token
        flops = 2 * m.params * (load.rows + load.prefill) + 4 * m.layers * m.hidden * load.context
        return max(read / self.gpu.bandwidth, flops / self.gpu.flops)

    def describe(self) -> str:
        return (f"{self.model.name} on {self.gpu.name}: weights {self.model.weight_bytes / 1e9:.1f} GB, "
                f"KV {self.model.kv_bytes_per_token / 1e3:.0f} kB/token, KV cache "
                f"{self.kv_capacity:,} tokens per replica")


class SimulatedFleet:
    """R replicas in this process on simulated clocks (the module docstring). A FleetFactory
    (`runner.run(prompts, fleet, config)`) and, once opened, the run's Fleet.

    `new_backend()` makes one replica's engine; `cost` prices its steps (None: every step
    costs 1, so the wall is the busiest replica's step count); `lose` = {replica: simulated
    second} drops replicas mid-run."""

    def __init__(self, new_backend: Callable[[], Backend], replicas: int, config: EagerConfig,
                 cost: StepCost | None = None, *, lose: dict[int, float] | None = None,
                 slice_seconds: float | None = None) -> None:
        self.new_backend = new_backend
        self.replicas = replicas
        self.config = config
        self.cost = cost
        self.lose = dict(lose or {})
        self.workers: list[TreeWorker] = []
        self.clocks = [0.0] * replicas
        self.steps = [0] * replicas
        self.now = 0.0
        self.wall = 0.0
        """Simulated seconds at the run's last event."""
        self.worker_cpu = 0.0
        """Process seconds spent inside the replicas (their runner and engine work, and the
        pickling of their batches): what the driver's own share is measured against."""
        self.placement = Placement(replicas)
        self.late_forks = False
        self.batches = 0
        """Batches that carried states back to the driver (a Ray replica returns one each time
        a tree's state changes)."""
        self.slice_seconds = slice_seconds
        self.slices = 0
        """Empty batches: a Ray replica also returns when `slice_seconds` passed without a
        state change (replicas.SLICE_SECONDS), so that commands reach it."""
        self._returned = [0.0] * replicas

    # --- FleetFactory -----------------------------------------------------------------------
    def open_fleet(self, prompts: Sequence[PromptInput], *, texts: bool) -> "SimulatedFleet":
        started = time.process_time()
        self.workers = [TreeWorker(self.new_backend(), self.config, prompts, texts=texts)
                        for _ in range(self.replicas)]
        self.worker_cpu += time.process_time() - started
        self.late_forks = all(w.late_forks for w in self.workers)
        self._idle = [False] * self.replicas
        return self

    # --- Fleet ------------------------------------------------------------------------------
    def start(self, orders: Sequence[TreeOrder]) -> None:
        self.placement.start(orders)

    def set_cap(self, order: CapOrder) -> None:
        self.placement.set_cap(order)

    def wait(self) -> list[TreeState]:
        """Step the replica with the earliest clock until some tree's state changed; what
        that costs (runner, engine, the clock) is the replicas', not the driver's."""
        p = self.placement
        started = time.process_time()
        for index in p.alive:  # commands reach a replica now (an idle one's clock moves up)
            if p.pending[index]:
                self.clocks[index] = max(self.clocks[index], self.now)
                self._idle[index] = False
        while True:
            ready = [i for i in p.alive if p.pending[i] or (p.open[i] and not self._idle[i])]
            if not ready:
                raise RuntimeError("the replicas have nothing to run but some trees are "
                                   "unfinished")
            index = min(ready, key=lambda i: (self.clocks[i], i))
            self.now = self.clocks[index]
            if index in self.lose and self.now >= self.lose[index]:
                del self.lose[index]
                self.worker_cpu += time.process_time() - started
                p.lose(index, why=f"replica {index} dropped at {self.now:.1f} simulated s")
                return []
            worker = self.workers[index]
            worker.apply(p.take(index))
            states = worker.events()
            idle = False
            if not states:
                idle = not worker.step()
                if not idle:
                    self.steps[index] += 1
                    load = getattr(worker.backend, "last_step", None)
                    self.clocks[index] += (1.0 if self.cost is None or load is None
                                           else self.cost.seconds(load))
                states = worker.events()
            self._idle[index] = idle and not states
            if states or idle:
                break
            if self.slice_seconds and self.clocks[index] - self._returned[index] >= self.slice_seconds:
                self.slices += 1  # (an empty batch: nothing for the planner to read)
                self._returned[index] = self.clocks[index]
        batch = Batch(states, 0, worker.live, self._idle[index])
        blob = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        self.worker_cpu += time.process_time() - started
        batch = pickle.loads(blob)  # the driver's share: what Ray hands it
        p.received(index, batch)
        self._returned[index] = self.clocks[index]
        if batch.states:
            self.wall = max(self.wall, self.clocks[index])
            self.batches += 1
        return batch.states


__all__ = ["GPU", "ModelShape", "GPUS", "MODELS", "StepCost", "SimulatedFleet"]
