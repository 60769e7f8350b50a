"""Full-parallel throughput: HFBackend's step loop against `model.generate(num_return_sequences=M)`.

Same model, prompts, rows (prompts x M) and lengths (exactly T new tokens per row, EOS
ignored) on both sides; prefill is included in both timings. Not a test: prints tokens/s and
`RATIO eager_vs_generate <x>` (> 1 means the backend is faster).

    python benchmarks/throughput.py                          # SmolLM2-135M, 1 prompt x 32 rows
    python benchmarks/throughput.py --prompts 4 --max-seqs 8
    python benchmarks/throughput.py --model tiny --quick     # random tiny model, seconds
    python benchmarks/throughput.py --model random:DIR --device cuda --prompts 30   # GPU: a
        # random-weight model of DIR's config.json (no weights need to travel), 960 rows
    python benchmarks/throughput.py ... --rows-sweep 32,128,512,960   # ms per decode step
    python benchmarks/throughput.py --suite --model smollm2-shape:4   # issue 21's matrix
    python benchmarks/throughput.py --invariance-cost --model smollm2-shape:4

Each backend side runs four ways: as a run that never branches gets it (no top-K,
`logprobs=False`), without and with the token confidence (`confidence_k` 0 and 20: what a
Full Parallel run computes by default, docs/CONFIDENCE.md), and as a branching run gets it
(top-K logprobs and entropies every step), without and with the confidence. `RATIO topk_cost`
is what EAGer's uncertainty signal costs the engine (both without the confidence); `RATIO
confidence_cost_full_parallel` and `RATIO confidence_cost_branching` what the confidence
adds (target <= 1.05).

`--suite` runs issue 21's matrix side by side, alternating the two sides: 1 prompt x 32 rows
and 4 prompts x 8 rows, each at 1,024 and 2,048 new tokens, backend (no top-K) then
`generate()`. Per cell `RATIO backend_vs_generate[PxM,T] <x>` (target >= 1.3); from the 2,048
runs each side's decode-step time near 2,048 generated tokens over its time near 256 (mean of
32 steps around each; generate's steps timed by a stopping criterion that only reads the clock):
`RATIO step_2048_over_256[PxM] backend <a> generate <b>` (target a <= b). The model
`smollm2-shape:L` is SmolLM2-135M's shape (hidden 576, 9 heads, 3 KV heads, head dim 64,
MLP 1536, vocabulary 49,152, tied embeddings) with random weights and L layers (30 = the real
depth; fewer keep the matrix to minutes on a small CPU: the cache's cost per layer is the same).

On a machine other jobs share, `--clock cpu` (with one torch thread) times by this process's
CPU time, which their load does not inflate; the two sides are then comparable run to run.

`--invariance-cost` times the backend with its row blocks (the default: every forward takes a
multiple of 8 rows, so a row's numbers do not depend on the batch) against `row_block=1` (as
many rows as live: not batch-invariant) at a few row counts that are not multiples of 8:
`RATIO invariance_cost[rows] <t8 / t1>`; then `slot_attention` against torch's SDPA on the same
decode shapes (32 rows, views of a 4,096-column cache): `RATIO attention_slot_vs_sdpa[width]`.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from transformers import StoppingCriteriaList

from eager_eval.core.backend import NewTree, Root
from eager_eval.engines.hf import HFBackend

CLOCK = time.perf_counter
"""What the timings read: wall time, or (--clock cpu) this process's CPU time, which other jobs
on a shared machine do not inflate (with one torch thread it is the wall time of an idle one)."""

PROMPTS = [
    "Ana has 7 apples and buys 5 more. How many apples does she have? Give the final answer in \\boxed{}.",
    "A box holds 12 pencils. How many pencils are in 4 boxes? Give the final answer in \\boxed{}.",
    "Ben had 40 marbles and gave away 13. How many are left? Give the final answer in \\boxed{}.",
    "Cleo reads 15 pages a day for 6 days. How many pages does she read? Give the final answer in \\boxed{}.",
]


def load(name: str, device: str = "cpu", dtype: str | None = None, n_prompts: int = 1):
    """(model, tokenizer, token id lists of the prompts)."""
    if name == "tiny":
        return _tiny()
    if name.startswith("smollm2-shape"):
        layers = int(name.partition(":")[2] or 30)
        return _smollm2_shape(layers, device, dtype, n_prompts)
    if name.startswith("random:"):
        return _random(name.removeprefix("random:"), device, dtype, n_prompts)
    from eager_eval.engines.models import load_model_and_tokenizer
    from eager_eval.pipeline.prompts import chat_token_ids as apply_chat

    model, tokenizer = load_model_and_tokenizer(name)
    return model, tokenizer, [apply_chat(tokenizer, p) for p in PROMPTS]


def _synthetic_prompts(n: int, vocab: int) -> list[list[int]]:
    """n prompts of 40.. token ids: a random-weight model reads any ids alike."""
    return [[1 + (i * 7919 + j * 104729) % (vocab - 1) for j in range(40 + 9 * (i % 12))]
            for i in range(n)]


def _random(path: str, device: str, dtype: str | None, n_prompts: int):
    """A model of `path`'s config.json with random weights, and `path`'s tokenizer: the speed
    of the real architecture where its weights cannot travel (a lent GPU machine)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(path)
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, _synthetic_prompts(n_prompts, config.vocab_size)


def _smollm2_shape(layers: int, device: str, dtype: str | None, n_prompts: int):
    """SmolLM2-135M's architecture with random weights and `layers` layers (no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
                         head_dim=64, max_position_embeddings=8192, rope_theta=100000.0,
                         rms_norm_eps=1e-5, tie_word_embeddings=True, pad_token_id=0)
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    model = LlamaForCausalLM(config).to(device=device, dtype=torch_dtype).eval()
    return model, _tiny_tokenizer(), _synthetic_prompts(max(n_prompts, len(PROMPTS)), config.vocab_size)


def _tiny_tokenizer():
    class Tokenizer:
        eos_token_id = 2

        def decode(self, ids, skip_special_tokens=False):
            return " ".join(map(str, ids))

    return Tokenizer()


def _sync(model) -> None:
    """Wait for the GPU: timings must include the work queued, not just its launch."""
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def _tiny():
    """A random Llama with SmolLM2-135M's vocabulary size: no download, no models.py needed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    prompts = [
        [1 + (i * 7919 + j * 104729) % 49000 for j in range(40 + 9 * i)]
        for i in range(len(PROMPTS))
    ]
    return model, _tiny_tokenizer(), prompts


def run_backend(
    model, tokenizer, prompts, m: int, t: int, temperature: float, logprobs: bool = False,
    confidence_k: int = 0, steps: list[float] | None = None,
    row_block: int | None = None,
) -> tuple[float, float]:
    """(seconds for every row to reach `t` tokens, seconds of the first step = prefill + token 0).
    The runner's finishing is done by hand. `steps` gets each step's seconds (step i reports
    generated position i)."""
    backend = HFBackend(model, tokenizer, temperature=temperature, top_p=1.0, top_k=0,
                        logprobs=logprobs, confidence_k=confidence_k, max_rows=len(prompts) * m,
                        **({} if row_block is None else {"row_block": row_block}))
    _sync(model)
    start = CLOCK()
    backend.add([NewTree(i, tuple(p), tuple(Root(i * m + j, 1000 + i * m + j) for j in range(m)), t)
                 for i, p in enumerate(prompts)])
    first = None
    last = start
    while backend.has_unfinished():
        for step in backend.step():
            if step.position + 1 >= t:
                backend.finish(step.seq_id)
        if steps is not None:
            _sync(model)
            now = CLOCK()
            steps.append(now - last)
            last = now
        first = first or CLOCK() - start
    _sync(model)
    return CLOCK() - start, first


class StepClock:
    """A stopping criterion that never stops: it notes when generate() finished each token."""

    def __init__(self, model):
        self.model = model
        self.marks = [CLOCK()]

    def __call__(self, input_ids, scores, **kwargs):
        _sync(self.model)
        self.marks.append(CLOCK())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    @property
    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def run_generate(model, prompts, m: int, t: int, temperature: float,
                 clock: StepClock | None = None) -> float:
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + list(p) for p in prompts], device=model.device)
    mask = torch.tensor(
        [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device
    )
    _sync(model)
    start = CLOCK()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            num_return_sequences=m,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=t,
            min_new_tokens=t,
            pad_token_id=0,
            **({} if clock is None else {"stopping_criteria": StoppingCriteriaList([clock])}),
        )
    _sync(model)
    elapsed = CLOCK() - start
    assert out.shape == (len(prompts) * m, width + t), out.shape
    return elapsed


def rows_sweep(model, tokenizer, rows_list: list[int], t: int, temperature: float) -> None:
    """Decode-step time of the backend (no top-K) at several batch sizes: on a GPU a step costs
    about the same at 50 or 500 rows, so a method's wall time follows its steps."""
    print(f"{'rows':>6}{'ms/step':>10}{'tok/s':>10}{'peak GB':>9}")
    for rows in rows_list:
        m = min(rows, 32)
        prompts = _synthetic_prompts(max(1, rows // m), model.config.vocab_size)
        if model.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(model.device)
        total, first = run_backend(model, tokenizer, prompts, m, t, temperature)
        step_ms = 1000 * (total - first) / max(t - 1, 1)
        peak = torch.cuda.max_memory_allocated(model.device) / 2**30 if model.device.type == "cuda" else float("nan")
        print(f"{len(prompts) * m:>6}{step_ms:>10.2f}{len(prompts) * m * (t - 1) / (total - first):>10.0f}"
              f"{peak:>9.2f}")


def step_ms(steps: list[float], at: int, window: int = 32) -> float:
    """Mean ms of the steps that generated positions [at - window/2, at + window/2)."""
    lo, hi = max(1, at - window // 2), min(len(steps), at + window // 2)
    return 1000 * sum(steps[lo:hi]) / max(1, hi - lo)


def suite(model, tokenizer, prompts, temperature: float, repeats: int, lengths=(1024, 2048),
          shapes=((1, 32), (4, 8))) -> None:
    """Issue 21's matrix, each cell best of `repeats`, the two sides alternating."""
    run_backend(model, tokenizer, prompts[:1], 2, 2, temperature)  # warm-up: first-call costs
    run_generate(model, prompts[:1], 2, 2, temperature)
    ratios, step_ratios = [], []
    for n_prompts, m in shapes:
        cell_prompts = prompts[:n_prompts]
        for t in lengths:
            best = {"backend": float("inf"), "generate": float("inf")}
            steps_of: dict[str, list[float]] = {}
            for r in range(repeats):
                steps: list[float] = []
                total, _ = run_backend(model, tokenizer, cell_prompts, m, t, temperature, steps=steps)
                if total < best["backend"]:
                    best["backend"], steps_of["backend"] = total, steps
                clock = StepClock(model)
                total = run_generate(model, cell_prompts, m, t, temperature, clock=clock)
                if total < best["generate"]:
                    best["generate"], steps_of["generate"] = total, clock.steps
                print(f"  {n_prompts}x{m} T={t} round {r}: backend {best['backend']:.1f} s, generate "
                      f"{best['generate']:.1f} s, load {os.getloadavg()[0]:.2f}", flush=True)
            tokens = n_prompts * m * t
            ratio = best["generate"] / best["backend"]
            ratios.append(ratio)
            marks = [at for at in (256, 1024) if at < t] + [t - 16]
            print(f"{n_prompts}x{m} T={t}: backend {tokens / best['backend']:.1f} tok/s, generate "
                  f"{tokens / best['generate']:.1f} tok/s; step ms near "
                  + " / ".join(map(str, marks)) + ": "
                  + "; ".join(f"{side} " + " / ".join(f"{step_ms(s, at):.1f}" for at in marks)
                              for side, s in steps_of.items()), flush=True)
            print(f"RATIO backend_vs_generate[{n_prompts}x{m},T={t}] {ratio:.3f}", flush=True)
            if t >= 2048:
                growth = {side: step_ms(s, 2048 - 16) / step_ms(s, 256) for side, s in steps_of.items()}
                step_ratios.append(growth)
                print(f"RATIO step_2048_over_256[{n_prompts}x{m}] backend {growth['backend']:.3f} "
                      f"generate {growth['generate']:.3f}", flush=True)
    print(f"RATIO backend_vs_generate_min {min(ratios):.3f}")


def attention_cost(model, rows: int = 32, widths=(256, 1024, 2048), repeats: int = 5) -> None:
    """slot_attention (batch-invariant) against torch's SDPA on the same decode shapes: one
    query per row, keys read through views of a slot cache of 4,096 columns."""
    import torch.nn.functional as F

    from eager_eval.engines.hf_slots import slot_attention

    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    torch.manual_seed(0)
    keys = torch.randn(rows, kv_heads, 4096, dim, dtype=model.dtype, device=model.device)
    values = torch.randn_like(keys)
    query = torch.randn(rows, heads, 1, dim, dtype=model.dtype, device=model.device)
    for width in widths:
        lengths = torch.arange(rows, device=model.device) * 7 % width + 1
        seen = (torch.arange(width, device=model.device)[None, :] < lengths[:, None])[:, None, None]
        k, v = keys[:, :, :width], values[:, :, :width]
        sides = {
            "slot_attention": lambda: slot_attention(None, query, k, v, seen, scaling=dim**-0.5),
            "sdpa": lambda: F.scaled_dot_product_attention(query, k, v, attn_mask=seen,
                                                           enable_gqa=heads != kv_heads),
        }
        best = {}
        for name, f in sides.items():
            f()
            _sync(model)
            start = CLOCK()
            for _ in range(repeats):
                f()
            _sync(model)
            best[name] = 1000 * (CLOCK() - start) / repeats
        print(f"attention {rows} rows x {width} columns: slot_attention {best['slot_attention']:.2f} "
              f"ms, sdpa {best['sdpa']:.2f} ms per layer")
        print(f"RATIO attention_slot_vs_sdpa[{width}] {best['slot_attention'] / best['sdpa']:.3f}",
              flush=True)


def invariance_cost(model, tokenizer, prompts, temperature: float, t: int, repeats: int,
                    rows_list=(1, 3, 12, 20)) -> None:
    """The backend with row blocks of 8 (batch-invariant) against row_block=1, alternating;
    then the attention alone (`attention_cost`)."""
    attention_cost(model)
    run_backend(model, tokenizer, prompts[:1], 2, 2, temperature)
    for rows in rows_list:
        best = {8: float("inf"), 1: float("inf")}
        for _ in range(repeats):
            for block in (8, 1):
                total, _ = run_backend(model, tokenizer, prompts[:1], rows, t, temperature,
                                       row_block=block)
                best[block] = min(best[block], total)
        print(f"rows {rows}: row_block 8 {best[8]:.2f} s, row_block 1 {best[1]:.2f} s, load "
              f"{os.getloadavg()[0]:.2f}")
        print(f"RATIO invariance_cost[{rows}] {best[8] / best[1]:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="smollm2-135m",
        help="models.py name, 'tiny' (random), or random:DIR (DIR's config, random weights)"
    )
    parser.add_argument("--prompts", type=int, default=1,
                        help=f"1..{len(PROMPTS)} (more with random weights: synthetic ids)")
    parser.add_argument("--max-seqs", type=int, default=32, help="M: rows per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, ... (default: bf16 on CUDA)")
    parser.add_argument("--rows-sweep", default=None, metavar="LIST",
                        help="only time decode steps at these row counts (e.g. 32,128,512,960)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="best of N for each side, alternating"
    )
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time by the wall clock, or by this process's CPU time (a shared "
                        "machine: other jobs do not count; use with --threads 1 / OMP_NUM_THREADS=1)")
    parser.add_argument("--quick", action="store_true", help="8 rows x 16 tokens (under a minute); "
                        "with --suite: lengths 256 and 512")
    parser.add_argument("--suite", action="store_true",
                        help="issue 21's matrix: 1x32 and 4x8 rows at 1,024 and 2,048 new tokens")
    parser.add_argument("--cells", default=None, metavar="LIST",
                        help="with --suite: only these cells, e.g. 1x32@1024,4x8@2048")
    parser.add_argument("--invariance-cost", action="store_true",
                        help="row blocks of 8 (batch-invariant) vs 1, at 1, 3, 12 and 20 rows")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.quick and not args.suite:
        args.max_seqs, args.max_new_tokens = min(args.max_seqs, 8), min(args.max_new_tokens, 16)

    model, tokenizer, prompts = load(args.model, args.device, args.dtype, max(args.prompts, 4))
    print(f"model={args.model} device={model.device} dtype={model.dtype} threads="
          f"{torch.get_num_threads()} load={os.getloadavg()[0]:.2f} cpu={_cpu_name()} "
          f"clock={args.clock}", flush=True)
    if args.suite:
        lengths = (256, 512) if args.quick else (1024, 2048)
        if args.cells:
            for cell in args.cells.split(","):
                shape, _, t = cell.partition("@")
                n, m = (int(x) for x in shape.split("x"))
                suite(model, tokenizer, prompts, args.temperature, args.repeats,
                      lengths=(int(t),), shapes=((n, m),))
        else:
            suite(model, tokenizer, prompts, args.temperature, args.repeats, lengths=lengths)
        return
    if args.invariance_cost:
        invariance_cost(model, tokenizer, prompts, args.temperature, args.max_new_tokens,
                        args.repeats)
        return
    if args.rows_sweep:
        run_backend(model, tokenizer, prompts[:1], 2, 2, args.temperature)  # warm-up
        rows_sweep(model, tokenizer, [int(r) for r in args.rows_sweep.split(",")],
                   args.max_new_tokens, args.temperature)
        return
    prompts = prompts[: args.prompts]
    m, t = args.max_seqs, args.max_new_tokens
    tokens = len(prompts) * m * t
    print(
        f"model={args.model} device={model.device} dtype={model.dtype} threads={torch.get_num_threads()} "
        f"load={os.getloadavg()[0]:.2f} prompts={len(prompts)} (lengths {[len(p) for p in prompts][:8]}) "
        f"M={m} T={t} rows={len(prompts) * m}"
    )
    run_backend(model, tokenizer, prompts, 2, 2, args.temperature)  # warm-up: first-call costs
    run_backend(model, tokenizer, prompts, 2, 2, args.temperature, logprobs=True, confidence_k=20)
    run_generate(model, prompts, 2, 2, args.temperature)
    eager = generate = eager_first = generate_first = topk = float("inf")
    conf = topk_conf = float("inf")
    for r in range(args.repeats):  # alternate, so a busy spell on a shared machine hits both sides
        e, e_first = run_backend(model, tokenizer, prompts, m, t, args.temperature)
        c, _ = run_backend(model, tokenizer, prompts, m, t, args.temperature, confidence_k=20)
        k, _ = run_backend(model, tokenizer, prompts, m, t, args.temperature, logprobs=True)
        kc, _ = run_backend(model, tokenizer, prompts, m, t, args.temperature, logprobs=True,
                            confidence_k=20)
        g = run_generate(model, prompts, m, t, args.temperature)
        g_first = run_generate(model, prompts, m, 1, args.temperature)  # prefill + token 0
        print(
            f"round {r}: eager {e:.2f} s (first step {e_first:.2f}; with the confidence {c:.2f}; "
            f"with top-K {k:.2f}, and the confidence {kc:.2f}), "
            f"generate {g:.2f} s (T=1: {g_first:.2f}), load {os.getloadavg()[0]:.2f}"
        )
        eager, generate, topk = min(eager, e), min(generate, g), min(topk, k)
        conf, topk_conf = min(conf, c), min(topk_conf, kc)
        eager_first, generate_first = min(eager_first, e_first), min(generate_first, g_first)
    # The backend prefills each distinct prompt once; generate() prefills all M copies. The
    # decode-only rate (after the first token) compares the step loops alone.
    decode_tokens = len(prompts) * m * (t - 1)
    eager_decode, generate_decode = eager - eager_first, generate - generate_first

    def rate(seconds: float) -> str:  # a busy spell can make the T=1 run outlast the full one
        return f"{decode_tokens / seconds:.1f} tok/s" if seconds > 0 else "n/a (noisy)"

    print(f"eager    {eager:7.2f} s  {tokens / eager:8.1f} tok/s  "
          f"(prefill+first {eager_first:.2f} s, decode {rate(eager_decode)})")
    print(f"eager+C  {conf:7.2f} s  {tokens / conf:8.1f} tok/s  (the token confidence)")
    print(f"eager+K  {topk:7.2f} s  {tokens / topk:8.1f} tok/s  (top-K logprobs and entropies)")
    print(f"eager+KC {topk_conf:7.2f} s  {tokens / topk_conf:8.1f} tok/s  (top-K and confidence)")
    print(f"generate {generate:7.2f} s  {tokens / generate:8.1f} tok/s  "
          f"(prefill+first {generate_first:.2f} s, decode {rate(generate_decode)})")
    if eager_decode > 0 and generate_decode > 0:
        print(f"RATIO eager_vs_generate_decode_only {generate_decode / eager_decode:.3f}")
    print(f"RATIO eager_vs_generate {generate / eager:.3f}")
    print(f"RATIO topk_cost {topk / eager:.3f}")
    print(f"RATIO confidence_cost_full_parallel {conf / eager:.3f}")
    print(f"RATIO confidence_cost_branching {topk_conf / topk:.3f}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    import platform

    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


if __name__ == "__main__":
    main()
