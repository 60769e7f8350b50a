"""Token savings: EAGer-adapt against Full Parallel on the demo set, embedded SmolLM2-135M.

Both methods run in one process on the same prompts, with the same M, seed and sampling
settings (the demo's defaults, `eager_eval.frontends.cli.main.DEMO_DEFAULTS`). Not a test: prints Pass@k and
#T of both and `RATIO eager_adapt_tokens_vs_full_parallel <x>` (< 1 means EAGer-adapt decoded
fewer tokens).

    python benchmarks/savings.py              # the demo's default size
    python benchmarks/savings.py --quick      # 2 problems, 32 tokens: under a minute on a CPU
    python benchmarks/savings.py --limit 12 --max-seqs 8 --max-new-tokens 128
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from eager_eval.frontends.cli.main import DEMO_DEFAULTS, DEMO_LIMIT, DEMO_MODEL, DEMO_THREADS
from eager_eval.core.config import EagerConfig
from eager_eval.pipeline.demo_problems import demo_problems
from eager_eval.engines.registry import load_engine
from eager_eval.pipeline.prompts import Prompt, PromptEncoder
from eager_eval.pipeline.metrics import score_run
from eager_eval.core.runner import run


def load_demo(model: str, limit: int, threads: int) -> tuple[Any, list, list[str], float]:
    """(engine, encoded prompts, targets, seconds to load) of the first `limit` demo problems,
    with torch pinned to `threads` (benchmarks/confidence.py uses it too)."""
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    engine = load_engine(model)
    problems = demo_problems(limit)
    encoder = PromptEncoder.for_engine(engine)
    prompts = [encoder.encode(Prompt(p.problem)) for p in problems]
    return engine, prompts, [p.answer for p in problems], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 problems, 32 new tokens")
    parser.add_argument("--limit", type=int, default=DEMO_LIMIT)
    parser.add_argument("--max-seqs", type=int, default=DEMO_DEFAULTS["max_seqs"])
    parser.add_argument("--max-new-tokens", type=int, default=DEMO_DEFAULTS["max_new_tokens"])
    parser.add_argument("--theta", type=float, default=DEMO_DEFAULTS["theta"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=DEMO_THREADS)
    parser.add_argument("--model", default=DEMO_MODEL)
    args = parser.parse_args()
    if args.quick:
        args.limit, args.max_new_tokens = 2, 32

    engine, prompts, targets, seconds = load_demo(args.model, args.limit, args.threads)
    print(f"{args.model}: {len(prompts)} demo problems, M={args.max_seqs}, "
          f"max_new_tokens={args.max_new_tokens}, theta={args.theta} "
          f"(loaded in {seconds:.1f} s)")

    tokens = {}
    for mode in ("full_parallel", "eager_adapt"):
        config = EagerConfig(**{**DEMO_DEFAULTS, "mode": mode, "max_seqs": args.max_seqs,
                                "max_new_tokens": args.max_new_tokens, "theta": args.theta,
                                "seed": args.seed})
        result = run(prompts, engine.new_backend(config), config)
        _, metrics = score_run(result.prompts, targets, "math")
        tokens[mode] = metrics.tokens_generated
        print(f"{mode:<14} Pass@k {metrics.pass_at_k:.3f}  Cons@k {metrics.cons_at_k:.3f}  "
              f"#T {metrics.tokens_generated:>6}  #S {metrics.seqs_mean:.2f} "
              f"({metrics.seqs_min}-{metrics.seqs_max})  rounds {len(result.rounds)}  "
              f"{result.wall_seconds:.1f} s")
    ratio = tokens["eager_adapt"] / tokens["full_parallel"]
    print(f"RATIO eager_adapt_tokens_vs_full_parallel {ratio:.3f}")


if __name__ == "__main__":
    main()
