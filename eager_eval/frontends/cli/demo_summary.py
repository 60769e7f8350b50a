"""What `eager-eval demo` says around its table: the settings first, then a legend, what the
methods did (how many sequences moved between prompts, what was saved), and where to go next.

Every number here is read back from the run directory the demo just wrote (`results.json` and
the per-prompt trees, `report.trees`): what is said is what was generated.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Sequence

LEGEND = [
    ("Pass@k", "share of prompts with at least one correct sequence (k = the sequences that "
               "prompt got)"),
    ("Cons@k", "share of prompts whose majority-vote answer is correct"),
    ("Conf Cons@k", "the same with each vote weighted by its sequence's confidence "
                    "(docs/CONFIDENCE.md)"),
    ("Pass Rate", "per prompt, the share of its sequences that are correct, averaged"),
    ("#T", "tokens decoded, a prefix shared by forked sequences counted once (the cost)"),
    ("#S", "sequences per prompt: mean (fewest-most)"),
    ("Savings", "1 - #T / #T of Full Parallel on the same prompts"),
]

DOCS = "README.md, docs/METRICS.md (the numbers), docs/THETA.md (theta=auto), docs/ARCHITECTURE.md"


def settings_lines(model: str, n_prompts: int, configs: Sequence[Any]) -> list[str]:
    """The settings, before anything runs (`configs`: one EagerConfig per method)."""
    c = configs[0]
    theta = ("auto (measured on these prompts once the model is loaded, docs/THETA.md)"
             if c.theta_is_auto else f"{c.theta:g} nats (--theta auto measures one for any model)")
    threshold = ("fixed θ" if c.percentile is None
                 else f"τ = max(θ, the prompt's {c.percentile:g}th percentile so far)")
    return [
        f"eager-eval demo: {model} on {n_prompts} generated arithmetic problems",
        f"  N = {n_prompts} prompts · M = {c.max_seqs} sequences per prompt (budget M·N = "
        f"{c.budget(n_prompts)}) · {c.max_new_tokens} new tokens at most · temperature "
        f"{c.temperature:g} · seed {c.seed}",
        f"  θ = {theta} · top-{c.entropy_k} entropy · {threshold}",
        "  methods: " + ", ".join(cfg.mode.value for cfg in configs),
    ]


def legend_lines() -> list[str]:
    width = max(len(name) for name, _ in LEGEND)
    return ["Legend:"] + [f"  {name:<{width}}  {text}" for name, text in LEGEND]


def story_lines(results_path: Path) -> list[str]:
    """What happened, from the run directory: theta, EAGer-init's caps, what reallocation
    moved, the savings, and one honest line where EAGer's Pass@k is below Full Parallel's."""
    from eager_eval.report.trees import load_runs, plural

    data = json.loads(Path(results_path).read_text(encoding="utf-8"))
    entries = {e["method"]: e for e in data["runs"]}
    trees = {r.method: r for r in load_runs(results_path)}
    lines = ["What happened:"]
    if data.get("theta_auto"):
        cal = data["theta_auto"]
        lines.append(f"  θ = {cal['theta']:g} nats, measured: the {cal['quantile']:.2%} quantile "
                     f"of {cal['n_entropies']} top-K entropies in a {cal['warmup_tokens']}-token "
                     f"warm-up (median {cal['median_entropy']:g}, largest "
                     f"{cal['max_entropy']:g}).")
    init = trees.get("eager_init") or trees.get("eager_adapt")
    if init is not None:
        m = int(init.settings.get("max_seqs", 0))
        first = [[t for t in p.trees if t.round == 0][0] for p in init.prompts]
        sizes = [len(t.sequences) for t in first]
        capped = [p.index for p, t in zip(init.prompts, first) if t.hit_cap]
        unspent = m * len(sizes) - sum(sizes)
        lines.append(
            f"  EAGer-init followed one trace per prompt and forked where the entropy passed the "
            f"threshold: {min(sizes)}-{max(sizes)} sequences per prompt; "
            f"{len(capped)} of {len(sizes)} prompts hit the cap M = {m}"
            + (f" (#{', #'.join(map(str, capped))})" if capped else "")
            + f". It left {unspent} of the {m * len(sizes)} sequences of the budget unspent.")
    for method, who in (("eager_adapt", "the prompts that hit the cap"),
                        ("eager", "the prompts with no correct answer yet (it reads the labels)")):
        run = trees.get(method)
        if run is None:
            continue
        receivers = [p for p in run.prompts if p.reallocated]
        name = "EAGer-adapt" if method == "eager_adapt" else "Full EAGer"
        if receivers:
            where = ", ".join(f"#{p.index} +{p.reallocated}" for p in receivers)
            lines.append(f"  {name} moved {plural(run.moved, 'sequence')} of the unspent budget "
                         f"to {who}: {where}.")
        else:
            none = "no prompt hit the cap" if method == "eager_adapt" else "every prompt had a correct answer"
            lines.append(f"  {name} moved nothing: {none}.")
    lines += _savings_lines(entries)
    return lines


def _savings_lines(entries: dict[str, dict]) -> list[str]:
    lines = []
    base = entries.get("full_parallel")
    for method, name in (("eager_init", "EAGer-init"), ("eager_adapt", "EAGer-adapt"),
                         ("eager", "Full EAGer")):
        entry = entries.get(method)
        if entry is None or base is None or entry.get("savings_vs_full_parallel") is None:
            continue
        saved = entry["savings_vs_full_parallel"]
        lines.append(f"  {name} decoded {entry['metrics']['tokens_generated']:,} tokens, "
                     f"{abs(saved):.0%} {'fewer' if saved >= 0 else 'more'} than Full Parallel's "
                     f"{base['metrics']['tokens_generated']:,}.")
    adapt = entries.get("eager_adapt")
    if adapt is not None and base is not None and adapt["wall_seconds"] > base["wall_seconds"]:
        lines.append(f"  Wall time is another matter: EAGer-adapt took {adapt['wall_seconds']:.0f} s "
                     f"to Full Parallel's {base['wall_seconds']:.0f} s. A reallocation round "
                     "starts only once the trees it depends on have settled, so its sequences "
                     "decode after theirs: time follows decoding steps, not tokens.")
    if adapt is not None and base is not None:
        ours, theirs = adapt["metrics"]["pass_at_k"], base["metrics"]["pass_at_k"]
        if ours < theirs:
            lines.append(
                f"  Honestly: EAGer-adapt's Pass@k ({ours:.3f}) is below Full Parallel's "
                f"({theirs:.3f}) here. On a 135M model and a handful of prompts, independent "
                "samples find a rare right answer more often than forks of one trace; the "
                "paper's gains are on 3-20B reasoning models and 30-198 prompts.")
        else:
            lines.append(f"  EAGer-adapt's Pass@k ({ours:.3f}) "
                         f"{'matches' if ours == theirs else 'is above'} Full Parallel's "
                         f"({theirs:.3f}) on these prompts.")
    return lines


def next_lines(output: Path, show_prompt: int | None) -> list[str]:
    """The commands to look further; `show_prompt`: EAGer-adapt's prompt to draw, if it ran."""
    out = shlex.quote(str(output))
    report = shlex.quote(str(output / "report"))  # beside the run, wherever the command ran
    where = "" if show_prompt is None else f" --method eager_adapt --prompt {show_prompt}"
    return [
        "Next:",
        f"  eager-eval show {out}{where}   # one prompt's tree: forks, entropies, answers",
        f"  eager-eval report {out} --output {report}   # leaderboard, plots, every tree as HTML",
        f"  docs: {DOCS}",
    ]


def show_prompt_of(results_path: Path) -> int | None:
    """The prompt `eager-eval show` would pick in EAGer-adapt (the most reallocated)."""
    from eager_eval.report.trees import default_prompt, load_runs

    runs = [r for r in load_runs(results_path) if r.method == "eager_adapt"]
    return default_prompt(runs[0]).index if runs else None


__all__ = ["settings_lines", "legend_lines", "story_lines", "next_lines", "show_prompt_of",
           "LEGEND"]
