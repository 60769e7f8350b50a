"""Pins eager_eval/frontends/cli/demo_summary.py: what `eager-eval demo` prints around its table is read back
from the run it wrote (settings, legend, what moved, savings, the honest line, next steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_show import write_scripted_run

from eager_eval.frontends.cli import demo_summary, main as cli
from eager_eval.core.config import EagerConfig


@pytest.fixture(scope="module")
def two_methods(tmp_path_factory) -> Path:
    """Full Parallel and EAGer-adapt in one directory, as the demo writes them (the scripted
    model, whose odd prompts fill their cap: EAGer-adapt moves budget every time)."""
    return write_scripted_run(tmp_path_factory.mktemp("demo_summary") / "run").parent


def test_settings_come_first_with_n_m_theta_and_tokens():
    configs = [EagerConfig(mode=m, max_seqs=4, max_new_tokens=96, think_end=None, theta="auto")
               for m in ("full_parallel", "eager_adapt")]
    lines = demo_summary.settings_lines("smollm2-135m", 8, configs)
    assert lines[0] == "eager-eval demo: smollm2-135m on 8 generated arithmetic problems"
    assert "N = 8 prompts · M = 4 sequences per prompt (budget M·N = 32) · 96 new tokens" in lines[1]
    assert lines[2].startswith("  θ = auto (measured on these prompts")
    assert lines[3] == "  methods: full_parallel, eager_adapt"
    assert "θ = 2.5 nats" in demo_summary.settings_lines("m", 8, [configs[0].replace(theta=2.5)])[2]
    legend = "\n".join(demo_summary.legend_lines())
    for name in ("Pass@k", "Cons@k", "Pass Rate", "#T", "#S"):
        assert f"  {name} " in legend


def test_the_story_counts_what_the_run_wrote(two_methods):
    lines = demo_summary.story_lines(two_methods / "results.json")
    text = "\n".join(lines)
    records = [json.loads(line) for line in (two_methods / "eager_adapt.jsonl").read_text().splitlines()]
    moved = sum(1 for r in records for s in r["sequences"] if s["round"] > 0)
    capped = [r["index"] for r in records if r["trees"][0]["hit_cap"]]
    assert moved > 0
    assert f"EAGer-adapt moved {moved} sequences of the unspent budget to the prompts that hit" in text
    assert f"{len(capped)} of 6 prompts hit the cap M = 4" in text
    results = json.loads((two_methods / "results.json").read_text())
    entries = {e["method"]: e for e in results["runs"]}
    saved = entries["eager_adapt"]["savings_vs_full_parallel"]
    assert (f"EAGer-adapt decoded {entries['eager_adapt']['metrics']['tokens_generated']:,} tokens, "
            f"{abs(saved):.0%} {'fewer' if saved >= 0 else 'more'} than Full Parallel's") in text
    ours = entries["eager_adapt"]["metrics"]["pass_at_k"]
    theirs = entries["full_parallel"]["metrics"]["pass_at_k"]
    assert ("Honestly: EAGer-adapt's Pass@k" in text) == (ours < theirs)

    prompt = demo_summary.show_prompt_of(two_methods / "results.json")
    assert prompt in capped
    next_steps = demo_summary.next_lines(two_methods, prompt)
    assert next_steps[1].startswith(f"  eager-eval show {two_methods} --method eager_adapt "
                                    f"--prompt {prompt}")
    assert next_steps[2].startswith(f"  eager-eval report {two_methods} --output {two_methods / 'report'}")
    assert cli.main(["show", str(two_methods), "--method", "eager_adapt", "--prompt",
                     str(prompt)]) == 0  # the command printed works


@pytest.mark.parametrize("ours, theirs, honest", [(0.25, 0.375, True), (0.375, 0.375, False),
                                                  (0.5, 0.375, False)])
def test_one_honest_line_when_eager_adapt_finds_less_than_full_parallel(ours, theirs, honest):
    def entry(pass_at_k, tokens, savings, wall):
        return {"metrics": {"pass_at_k": pass_at_k, "tokens_generated": tokens},
                "savings_vs_full_parallel": savings, "wall_seconds": wall}

    lines = demo_summary._savings_lines({"full_parallel": entry(theirs, 2586, 0.0, 31.3),
                                         "eager_adapt": entry(ours, 2194, 0.152, 62.6)})
    text = "\n".join(lines)
    assert "EAGer-adapt decoded 2,194 tokens, 15% fewer than Full Parallel's 2,586." in text
    assert ("Honestly: EAGer-adapt's Pass@k" in text) == honest
    assert "EAGer-adapt took 63 s to Full Parallel's 31 s" in text
