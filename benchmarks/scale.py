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

    def add(self, sequences: Any) -> None:
        self._timed(self.inner.add, sequences)

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


def load_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from eager_eval.models import converted_model_dir, resolve_model

    return AutoTokenizer.from_pretrained(converted_model_dir(resolve_model("smollm2-135m")))


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    from eager_eval.backends.simulated import SimulatedBackend, TraceProfile
    from eager_eval.config import EagerConfig
    from eager_eval.runner import PromptInput, run

    tokenizer = load_tokenizer()
    profile = TraceProfile(length=args.length)
    config = EagerConfig(mode=mode, theta=args.theta, max_seqs=args.max_seqs,
                         max_new_tokens=args.length, think_end=profile.think_end, seed=args.seed)
    prompt_words = tokenizer.encode(" Find the number of ordered pairs of integers such that",
                                    add_special_tokens=False)
    prompts = [PromptInput(tuple(prompt_words) + (1000 + i,), stop=(profile.stop,),
                           opens_thinking=True) for i in range(args.prompts)]
    sim = SimulatedBackend(tokenizer, profile, logprobs=config.is_branching)
    backend = TimedBackend(sim)
    labels = {i: i % 4 == 0 for i in range(args.prompts)}  # full EAGer: a quarter solved

    def verifier(prompt_idx: int, text: str) -> bool:
        return labels[prompt_idx] and len(text) % 3 == 0

    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run(prompts, backend, config, verifier=verifier if mode == "eager" else None)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    reported = sum(len(s.tokens) - s.fork_position for p in result.prompts for s in p.sequences)
    tokens = result.tokens_generated
    runner_cpu = cpu - backend.engine_seconds
    return {
        "mode": mode,
        "tokens": tokens,
        "sequences": result.n_sequences,
        "rounds": len(result.rounds),
        "steps": backend.steps,
        "max_rows": backend.max_rows,
        "reported": reported,
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--max-seqs", type=int, default=32)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--theta", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default=",".join(MODES))
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
    rows = {}
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--one", mode, "--prompts", str(args.prompts),
               "--max-seqs", str(args.max_seqs), "--length", str(args.length),
               "--theta", str(args.theta), "--seed", str(args.seed)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                             env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'mode':<14}{'#T':>10}{'seqs':>7}{'rounds':>7}{'steps':>7}{'rows':>6}"
          f"{'runner s':>10}{'engine s':>10}{'us/token':>10}{'RSS MB':>8}")
    for r in rows.values():
        print(f"{r['mode']:<14}{r['tokens']:>10}{r['sequences']:>7}{r['rounds']:>7}{r['steps']:>7}"
              f"{r['max_rows']:>6}{r['runner_cpu_s']:>10.2f}{r['engine_cpu_s']:>10.2f}"
              f"{r['runner_us_per_token']:>10.2f}{r['peak_rss_mb']:>8.0f}")
    print(f"RATIO driver_us_per_token {max(r['runner_us_per_token'] for r in rows.values()):.2f}")
    if "full_parallel" in rows and "eager_adapt" in rows:
        fp, ad = rows["full_parallel"], rows["eager_adapt"]
        print(f"RATIO adapt_steps_vs_fp {ad['steps'] / fp['steps']:.3f}")
        print(f"RATIO adapt_tokens_vs_fp {ad['tokens'] / fp['tokens']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
