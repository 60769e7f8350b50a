"""EAGer with a confidence stop against EAGer-adapt, DeepConf and Full Parallel, embedded model.

Every method runs in one process on the same demo problems, model, M, sampling settings and
seeds (SmolLM2-135M on CPU, the demo's sizes): Full Parallel, EAGer-adapt, EAGer-adapt with
`confidence_stop` (its reallocated sequences stop below the bar its EAGer-init tree sets),
and DeepConf online at both of the paper's filters (percentile 90: DeepConf-low; 10:
DeepConf-high). Per method and seed: #T, #S, the sequences stopped below their bar, Pass@k,
Cons@k and the confidence-aware votes
(pipeline/metrics.py); then per method the mean over seeds with the spread (min-max). Not a
test; docs/CONFIDENCE.md says what the columns mean.

    python benchmarks/confidence.py                     # 12 problems, M=4, 96 tokens, seeds 0-2
    python benchmarks/confidence.py --quick             # 2 problems, 32 tokens, one seed
    python benchmarks/confidence.py --limit 8 --seeds 0,1,2,3 --confidence-window 16

The group window is much shorter than the paper's 2,048 because the traces are 96 tokens: the
paper's window is about 6% of its 32k-token traces, 16 is 17% of 96 (a sequence is tested once
it has a full window).
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

from eager_eval.core.config import EagerConfig
from eager_eval.core.results import FinishReason
from eager_eval.core.runner import run
from eager_eval.frontends.cli.main import DEMO_DEFAULTS, DEMO_MODEL, DEMO_THREADS
from eager_eval.pipeline.metrics import score_run
from savings import load_demo  # a sibling script: benchmarks/ is sys.path[0]

METHODS: dict[str, dict[str, Any]] = {
    "full_parallel": {"mode": "full_parallel"},
    "eager_adapt": {"mode": "eager_adapt"},
    "eager_adapt+stop": {"mode": "eager_adapt", "confidence_stop": True},
    "deepconf-low": {"mode": "deepconf", "deepconf_percentile": 90.0},
    "deepconf-high": {"mode": "deepconf", "deepconf_percentile": 10.0},
}
"""What runs, by the name the table shows."""

COLUMNS = ("tokens", "seqs", "stopped", "pass_at_k", "cons_at_k", "conf_cons_at_k",
           "top10_cons_at_k", "top90_cons_at_k")
"""stopped: sequences that ended below their bar (finish reason `confidence`), all prompts."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 problems, 32 tokens, seed 0")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--max-seqs", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--theta", type=float, default=DEMO_DEFAULTS["theta"])
    parser.add_argument("--confidence-window", type=int, default=16)
    parser.add_argument("--deepconf-warmup", type=int, default=None,
                        help="default: half of M")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=DEMO_THREADS)
    parser.add_argument("--model", default=DEMO_MODEL)
    args = parser.parse_args()
    if args.quick:
        args.limit, args.max_new_tokens, args.seeds = 2, 32, "0"
    seeds = [int(s) for s in args.seeds.split(",")]
    warmup = args.deepconf_warmup or max(1, args.max_seqs // 2)

    engine, prompts, targets, seconds = load_demo(args.model, args.limit, args.threads)
    print(f"{args.model}: {len(prompts)} demo problems, M={args.max_seqs}, max_new_tokens="
          f"{args.max_new_tokens}, theta={args.theta}, confidence window "
          f"{args.confidence_window}, deepconf warm-up {warmup}, seeds {seeds}, load "
          f"{os.getloadavg()[0]:.2f} (loaded in {seconds:.1f} s)")
    rows: dict[str, list[dict[str, float]]] = {}
    print(f"{'method':<18}{'seed':>5}" + "".join(f"{c:>16}" for c in COLUMNS) + f"{'s':>7}")
    for seed in seeds:
        for name in args.methods.split(","):
            config = EagerConfig(**{**DEMO_DEFAULTS, **METHODS[name], "max_seqs": args.max_seqs,
                                    "max_new_tokens": args.max_new_tokens, "theta": args.theta,
                                    "seed": seed, "confidence_window": args.confidence_window,
                                    "deepconf_warmup": warmup})
            result = run(prompts, engine.new_backend(config), config)
            _, m = score_run(result.prompts, targets, "math")
            stopped = sum(s.finish_reason is FinishReason.CONFIDENCE
                          for p in result.prompts for s in p.sequences)
            row = {"tokens": m.tokens_generated, "seqs": m.seqs_mean, "stopped": stopped,
                   "pass_at_k": m.pass_at_k,
                   "cons_at_k": m.cons_at_k, "conf_cons_at_k": m.conf_cons_at_k,
                   "top10_cons_at_k": m.top10_cons_at_k, "top90_cons_at_k": m.top90_cons_at_k}
            rows.setdefault(name, []).append(row)
            print(f"{name:<18}{seed:>5}" + "".join(f"{_fmt(row[c]):>16}" for c in COLUMNS)
                  + f"{result.wall_seconds:>7.1f}")
    print(f"\nmean over {len(seeds)} seeds (min-max)")
    print(f"{'method':<18}" + "".join(f"{c:>21}" for c in COLUMNS))
    for name, per_seed in rows.items():
        cells = []
        for c in COLUMNS:
            values = [r[c] for r in per_seed]
            cells.append(f"{_fmt(statistics.mean(values))} ({_fmt(min(values))}-{_fmt(max(values))})")
        print(f"{name:<18}" + "".join(f"{cell:>21}" for cell in cells))
    if "full_parallel" in rows:
        base = statistics.mean(r["tokens"] for r in rows["full_parallel"])
        for name, per_seed in rows.items():
            if name != "full_parallel":
                ratio = statistics.mean(r["tokens"] for r in per_seed) / base
                print(f"RATIO {name}_tokens_vs_full_parallel {ratio:.3f}")


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.3f}"


if __name__ == "__main__":
    main()
