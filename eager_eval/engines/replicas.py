"""Engine replicas on Ray: one budget pool over many engines (docs/SCALE.md).

`replicas=N` (an `EngineOptions` field: `--replicas N`, model arg `replicas=N`, Inspect
`-M replicas=N`) loads N copies of the engine, each in a Ray actor of its own (`num_gpus` =
its tensor-parallel size on a GPU cluster, CPU threads otherwise). Each actor runs whole trees
with its own engine and a `TreeWorker` (core/worker.py): every per-token decision stays beside
the engine that produced the token. This process keeps the one budget pool: the runner's
planner (Algorithm 2 and the round schedule) plans for all replicas, `Placement` sends each
new tree to the least-loaded one, and the actors report back once per batch of steps (what a
tree's state became), never per token.

A replica whose process dies loses nothing: `Placement` starts its unfinished trees again on
the others, from their orders (a tree's seeds are a function of run seed, prompt, round and
branch, so it comes out the same); finished trees were already reported (and stored). When
every replica is gone the run stops with one `WorkersLostError`; the same command run again
resumes from the stored trees.

Ray is an optional dependency (`pip install 'eager-eval[ray]'`); with N > 1 and no Ray
running, a local one starts by itself, and `RAY_ADDRESS` joins an existing cluster.
Several processes launched by `accelerate launch` or `torchrun` (WORLD_SIZE > 1) would each
hold their own pool, splitting the task's budget: they are refused (`check_single_launch`).
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from eager_eval.common.errors import UserError
from eager_eval.core.config import EagerConfig
from eager_eval.core.tree import PromptInput
from eager_eval.core.worker import (
    Batch,
    CapOrder,
    Command,
    Placement,
    TreeOrder,
    TreeState,
    TreeWorker,
)

INSTALL_HINT = "pip install 'eager-eval[ray]'"

SLICE_SECONDS = 0.25
"""A replica's batch returns after this long even when no tree changed, so that caps decided
on other replicas reach trees waiting for them."""


class ReplicasError(ValueError, UserError):
    """A replicas setting this machine or cluster cannot run; the message says what can."""


# --- checks that need no Ray ------------------------------------------------------------------


def check_single_launch(environ: Mapping[str, str] | None = None) -> None:
    """Refuse to run as one of several launched processes (`accelerate launch`, `torchrun`):
    each would plan its own share of the task with its own budget pool, a silently different
    method. One process with `replicas=N` runs N engines under one pool."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return
    if world > 1:
        rank = env.get("RANK", env.get("LOCAL_RANK", "?"))
        raise ReplicasError(
            f"eager-eval was launched as process {rank} of {world} (WORLD_SIZE={world}, as "
            f"accelerate launch or torchrun start it); each process would hold its own budget "
            f"pool and split the task's: run one process with replicas={world} instead "
            f"(--replicas {world}, model arg replicas={world}, Inspect -M replicas={world}), "
            f"which loads {world} engines under one pool (docs/SCALE.md)")


def import_ray(replicas: int) -> Any:
    try:
        import ray
    except ImportError:
        raise ReplicasError(
            f"replicas={replicas} runs the engine replicas on Ray, which is not installed: "
            f"{INSTALL_HINT}") from None
    return ray


def _probe(address: str, timeout: float = 5.0) -> None:
    """A RAY_ADDRESS of the form [ray://]host:port must answer within `timeout` (ray.init
    itself retries for minutes)."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # 'auto', 'local': Ray finds (or fails to find) the cluster itself
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ReplicasError(
            f"RAY_ADDRESS={address} does not answer ({err.strerror or err}); start the cluster "
            f"there (ray start --head) or unset RAY_ADDRESS to start a local Ray") from None


def connect(replicas: int, cpus: float = 0) -> Any:
    """The Ray module, initialised: the running one, the cluster at RAY_ADDRESS, or a local
    one started now with at least `cpus` logical CPUs."""
    ray = import_ray(replicas)
    if ray.is_initialized():
        return ray
    address = os.environ.get("RAY_ADDRESS", "").strip()
    import logging

    try:
        if address:
            _probe(address)
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=max(int(cpus + 0.999), os.cpu_count() or 1),
                     include_dashboard=False, logging_level=logging.WARNING)
    except ReplicasError:
        raise
    except (ConnectionError, RuntimeError, TimeoutError) as err:
        where = f"RAY_ADDRESS={address}" if address else "a local Ray"
        raise ReplicasError(f"could not start or join {where}: {err}") from None
    return ray


# --- what each replica needs of the cluster ---------------------------------------------------


@dataclass(frozen=True)
class ReplicaShape:
    """The resources one replica asks Ray for, and its engine options."""

    num_gpus: float
    num_cpus: float
    options: Any
    """The replica's own EngineOptions (replicas=1; device and threads resolved)."""
    where: str
    """'GPU' or 'CPU': what the replicas run on (for messages)."""


def local_resources() -> dict[str, float]:
    """What a local Ray started here will have: this machine's CUDA GPUs (as torch counts
    them, when torch is installed), and as many logical CPUs as the replicas ask for."""
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        pass
    return {"GPU": float(gpus), "CPU": float("inf")}


def check_replicas(options: Any) -> None:
    """What can be checked before anything loads: Ray is installed, a RAY_ADDRESS answers,
    and (for a local Ray) this machine has the GPUs the replicas ask for."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    running = sys.modules.get("ray")
    if not address and not (running is not None and running.is_initialized()):
        replica_shape(options, options.replicas, local_resources(), where="this machine")
    import_ray(options.replicas)
    if address:
        _probe(address)


def replica_shape(options: Any, replicas: int, resources: Mapping[str, float],
                  where: str = "the Ray cluster") -> ReplicaShape:
    """What each of `replicas` replicas needs, checked against `resources` (of `where`)."""
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    one = options.replace(replicas=1)
    backend = options.backend
    if "device" in options.spec.options:  # hf: one device per replica
        device = options.device
        if device.startswith("cuda:"):
            raise ReplicasError(
                f"device={device} names one GPU, but each of the {replicas} replicas gets its "
                f"own: use device=cuda (or auto)")
        if device == "mps":
            raise ReplicasError(f"device=mps is one device: {replicas} replicas need CUDA GPUs "
                                f"(device=cuda) or device=cpu")
        if device == "auto":
            device = "cuda" if gpus >= 1 else "cpu"
        if device == "cuda":
            _check_gpus(replicas, 1, gpus, where)
            return ReplicaShape(1, 1, one.replace(device="cuda"), "GPU")
        threads = (one.threads if isinstance(one.threads, int)
                   else max(1, int(min(cpus, os.cpu_count() or 1)) // replicas))
        _check_cpus(replicas, threads, cpus, where)
        return ReplicaShape(0, threads, one.replace(device="cpu", threads=threads), "CPU")
    if backend == "vllm" and gpus >= 1:
        tp = int(options.engine_args.get("tensor_parallel_size", 1) or 1)
        pp = int(options.engine_args.get("pipeline_parallel_size", 1) or 1)
        _check_gpus(replicas, tp * pp, gpus, where)
        return ReplicaShape(tp * pp, 1, one, "GPU")
    _check_cpus(replicas, 1, cpus, where)
    return ReplicaShape(0, 1, one, "CPU")


def _check_gpus(replicas: int, each: int, gpus: float, where: str) -> None:
    if replicas * each > gpus:
        per = f" x {each} GPUs each (tensor parallel)" if each > 1 else ""
        fix = (f"use replicas={int(gpus) // each}" if gpus >= each
               else "run on a machine or Ray cluster with GPUs, or use device=cpu")
        raise ReplicasError(
            f"more replicas than GPUs: replicas={replicas}{per} needs {replicas * each} GPUs, "
            f"{where} has {gpus:g}; {fix}")


def _check_cpus(replicas: int, each: float, cpus: float, where: str) -> None:
    if replicas * each > cpus:
        raise ReplicasError(
            f"more replicas than CPUs: replicas={replicas} x {each:g} CPU threads needs "
            f"{replicas * each:g} CPUs, {where} has {cpus:g}; use fewer replicas or threads")


# --- the actor --------------------------------------------------------------------------------


class ReplicaActor:
    """One replica: an engine, and a TreeWorker per run (made a Ray actor by `ray.remote`)."""

    def __init__(self, model: str, options: Any, config: EagerConfig,
                 load_one: Callable[..., Any]) -> None:
        # the registry's single-engine loader, passed in (Ray pickles it by reference): this
        # module is below the registry and does not import it
        self.engine = load_one(model, options, config)
        self.worker: TreeWorker | None = None

    def describe(self) -> dict[str, Any]:
        e = self.engine
        return {"tokenizer": e.tokenizer, "context_length": getattr(e, "context_length", None),
                "vocab_size": getattr(e, "vocab_size", None), "name": getattr(e, "name", None),
                "info": e.info() if hasattr(e, "info") else {}, "pid": os.getpid()}

    def verify(self, config: EagerConfig) -> None:
        self.engine.verify(config)

    def open(self, config: EagerConfig, prompts: Sequence[PromptInput], texts: bool) -> bool:
        """A worker for one run on a fresh backend; whether it can fork behind itself."""
        self.worker = None
        gc.collect()
        self.worker = TreeWorker(self.engine.new_backend(config), config, prompts, texts=texts)
        if not gc.get_freeze_count():  # keep the collector off the model (runner._frozen_heap)
            gc.freeze()
        return self.worker.late_forks

    def advance(self, commands: Sequence[Command], seconds: float) -> Batch:
        if self.worker is None:
            raise RuntimeError("a replica was sent trees before its run was opened")
        return self.worker.advance(commands, seconds)

    def call(self, function: Callable[..., Any], args: tuple) -> Any:
        """`function(engine, *args)` here (theta=auto's warm-up runs on one replica)."""
        return function(self.engine, *args)

    def pid(self) -> int:
        return os.getpid()


def _unwrap(ray: Any, err: BaseException) -> BaseException:
    """The error raised inside an actor (a UserError stays one), else `err`."""
    cause = getattr(err, "cause", None)
    if isinstance(err, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
        return cause
    return err


# --- the engine the front ends load -----------------------------------------------------------


class ReplicatedEngine:
    """N engine replicas behind the `Engine` interface: `new_backend(config)` gives a run a
    `Replicas` fleet factory in place of a Backend (runner.run accepts both)."""

    def __init__(self, model: str, options: Any, config: EagerConfig,
                 load_one: Callable[..., Any]) -> None:
        self.options = options
        self.replicas = options.replicas
        ray = self._ray = connect(options.replicas, cpus=options.replicas * _cpus_hint(options))
        shape = replica_shape(options, options.replicas, ray.cluster_resources())
        self.shape = shape
        print(f"eager-eval: starting {self.replicas} replicas of {model} on Ray "
              f"({shape.where}: {shape.num_gpus:g} GPU, {shape.num_cpus:g} CPU each) ...",
              file=sys.stderr, flush=True)
        actor = ray.remote(ReplicaActor)
        self.actors = [actor.options(num_gpus=shape.num_gpus, num_cpus=shape.num_cpus,
                                     max_restarts=0, max_task_retries=0)
                       .remote(model, shape.options, config, load_one)
                       for _ in range(self.replicas)]
        try:
            described = self._started([a.describe.remote() for a in self.actors])
        except ray.exceptions.RayError as err:
            self.close()
            raise _load_error(ray, err) from None
        first = described[0]
        self.alive = list(range(self.replicas))
        self.pids = [d["pid"] for d in described]
        self.name = first["name"] or model
        self.tokenizer = first["tokenizer"]
        self.context_length = first["context_length"]
        self.vocab_size = first["vocab_size"]
        self._info = first["info"]

    def _started(self, refs: list[Any], every: float = 60.0) -> list[Any]:
        """Wait for every replica to load; say so now and then (a replica waits while the
        cluster's free GPUs or CPUs are held by others: Ray queues it)."""
        ray = self._ray
        started = time.perf_counter()
        while True:
            ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=every)
            if not waiting:
                return ray.get(refs)
            free = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
            print(f"eager-eval: {len(ready)} of {len(refs)} replicas loaded after "
                  f"{time.perf_counter() - started:.0f} s; the others wait for the Ray cluster "
                  f"(free now: {free}); Ctrl-C stops", file=sys.stderr, flush=True)

    def info(self) -> dict[str, Any]:
        return {**self._info, "replicas": self.replicas,
                "replica_resources": {"GPU": self.shape.num_gpus, "CPU": self.shape.num_cpus}}

    def verify(self, config: EagerConfig) -> None:
        self.on_replica(_verify, config)

    def on_replica(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(engine, *args)` on one live replica (e.g. theta=auto's warm-up)."""
        ray = self._ray
        for index in list(self.alive):
            try:
                return ray.get(self.actors[index].call.remote(function, args))
            except ray.exceptions.RayActorError:
                self.alive.remove(index)
            except ray.exceptions.RayTaskError as err:
                raise _unwrap(ray, err) from None
        raise ReplicasError(f"every one of the {self.replicas} replicas is gone")

    def new_backend(self, config: EagerConfig) -> "Replicas":
        return Replicas(self, config)

    def close(self) -> None:
        for a in getattr(self, "actors", []):
            try:
                self._ray.kill(a)
            except Exception:  # noqa: BLE001 (already gone)
                pass


def _verify(engine: Any, config: EagerConfig) -> None:
    engine.verify(config)


def _cpus_hint(options: Any) -> float:
    return float(options.threads) if isinstance(options.threads, int) else 1.0


def _load_error(ray: Any, err: BaseException) -> BaseException:
    """A replica that failed to load: the error it raised (a bad model name stays a UserError)."""
    cause = _unwrap(ray, err)
    if cause is not err:
        return cause
    inner = getattr(err, "creation_task_error", None) or getattr(err, "cause", None)
    if isinstance(inner, BaseException):
        return _unwrap(ray, inner)
    return ReplicasError(f"a replica failed to start: {err}")


class Replicas:
    """What `ReplicatedEngine.new_backend(config)` gives a run: a FleetFactory (worker.py).
    `on_tokens(total)` is told the tokens reported so far after each batch (progress)."""

    def __init__(self, engine: ReplicatedEngine, config: EagerConfig) -> None:
        self.engine = engine
        self.config = config
        self.on_tokens: Callable[[int], None] | None = None
        self.fleet: RayFleet | None = None
        """The run's fleet, once opened (its `placement` tells where each tree ran)."""

    def open_fleet(self, prompts: Sequence[PromptInput], *, texts: bool) -> "RayFleet":
        self.fleet = RayFleet(self.engine, self.config, prompts, texts, self.on_tokens)
        return self.fleet


class RayFleet:
    """The runner's fleet on the replicas' actors (worker.Fleet); see the module docstring."""

    def __init__(self, engine: ReplicatedEngine, config: EagerConfig,
                 prompts: Sequence[PromptInput], texts: bool,
                 on_tokens: Callable[[int], None] | None = None) -> None:
        ray = self._ray = engine._ray
        self.engine = engine
        self.actors = engine.actors
        self.placement = Placement(len(self.actors))
        self.on_tokens = on_tokens
        self.tokens = 0
        self._in_flight: dict[Any, int] = {}
        self._busy: set[int] = set()
        self._idle = [False] * len(self.actors)
        shared = ray.put(list(prompts))  # pickled once for every replica
        opening = {index: actor.open.remote(config, shared, texts)  # all at once: each collects
                   for index, actor in enumerate(self.actors) if index in engine.alive}
        late: list[bool] = []
        for index in range(len(self.actors)):
            if index not in opening:
                self._lose(index, quiet=True)
                continue
            try:
                late.append(ray.get(opening[index]))
            except ray.exceptions.RayActorError:
                self._lose(index)
            except ray.exceptions.RayTaskError as err:
                raise _unwrap(ray, err) from None
        self.late_forks = bool(late) and all(late)

    def start(self, orders: Sequence[TreeOrder]) -> None:
        self.placement.start(orders)

    def set_cap(self, order: CapOrder) -> None:
        self.placement.set_cap(order)

    def _dispatch(self) -> None:
        p = self.placement
        for index in p.alive:
            if index in self._busy:
                continue
            commands = p.take(index)
            if commands or (p.open[index] and not self._idle[index]):
                ref = self.actors[index].advance.remote(commands, SLICE_SECONDS)
                self._in_flight[ref] = index
                self._busy.add(index)
                self._idle[index] = False

    def wait(self) -> list[TreeState]:
        ray = self._ray
        self._dispatch()
        if not self._in_flight:
            raise RuntimeError("the replicas have nothing to run but some trees are unfinished")
        refs = list(self._in_flight)
        ready, rest = ray.wait(refs, num_returns=1)
        if rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        states: list[TreeState] = []
        for ref in ready:
            index = self._in_flight.pop(ref)
            self._busy.discard(index)
            try:
                batch: Batch = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                self._lose(index, why=str(err).splitlines()[0] if str(err) else "")
                continue
            except ray.exceptions.RayTaskError as err:
                raise _unwrap(ray, err) from None
            self.placement.received(index, batch)
            self._idle[index] = batch.idle
            states.extend(batch.states)
            self.tokens += batch.tokens
        if self.on_tokens is not None and ready:
            self.on_tokens(self.tokens)
        return states

    def _lose(self, index: int, why: str = "", quiet: bool = False) -> None:
        if index in self.engine.alive:
            self.engine.alive.remove(index)
        for ref, i in list(self._in_flight.items()):
            if i == index:
                del self._in_flight[ref]
        self._busy.discard(index)
        keys = self.placement.lose(index, why=f"replica {index}: {why}" if why else "")
        if not quiet:
            print(f"eager-eval: replica {index} is gone ({why or 'its process died'}); "
                  f"{len(keys)} unfinished trees start again on the {len(self.placement.alive)} "
                  f"others", file=sys.stderr, flush=True)


def load_replicas(model: str, options: Any, config: EagerConfig,
                  load_one: Callable[..., Any]) -> ReplicatedEngine:
    """The registry's loader when options.replicas > 1; each replica loads its engine with
    `load_one(model, options, config)` (options with replicas=1)."""
    started = time.perf_counter()
    engine = ReplicatedEngine(model, options, config, load_one)
    print(f"eager-eval: {engine.replicas} replicas ready in {time.perf_counter() - started:.1f} s",
          file=sys.stderr, flush=True)
    return engine


__all__ = ["INSTALL_HINT", "ReplicasError", "check_single_launch", "check_replicas",
           "local_resources", "import_ray", "connect",
           "ReplicaShape", "replica_shape", "ReplicaActor", "ReplicatedEngine", "Replicas",
           "RayFleet", "load_replicas"]
