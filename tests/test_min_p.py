"""A sampling setting added end to end: `min_p` (docs/ARCHITECTURE.md, "Adding a sampling
setting"). It was declared once (core/sampling.py) and applied by the engines (engines/hf.py,
engines/vllm.py); these tests show every front end offers it and hands it to the run without
a line of its own: the CLI flag, lm-eval's model arg and generation kwarg, Inspect's -M, a
sweep key.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from eager_eval.core.config import ConfigError, EagerConfig
from eager_eval.core.sampling import SamplingSettings
from eager_eval.engines.scripted import ScriptedEngine, mixed_script


def test_min_p_is_a_checked_setting_of_the_config():
    assert EagerConfig().min_p == 0.0  # off, as transformers and vLLM have it
    assert EagerConfig.from_mapping({"min_p": "0.05"}).sampling == SamplingSettings(min_p=0.05)
    for bad in (-0.1, 1.0, math.nan, "x"):
        with pytest.raises(ConfigError, match="min_p must be in \\[0, 1\\)"):
            EagerConfig.from_mapping({"min_p": bad})


def test_the_cli_takes_min_p_and_records_what_ran(tmp_path):
    from eager_eval.frontends.cli import main as cli

    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"q{i}", "answer": "5"}) + "\n"
                            for i in range(3)))
    out = tmp_path / "run"
    assert cli.main(["run", "--backend", "scripted", "--model", "mixed", "--data", str(data),
                     "--max-seqs", "3", "--max-new-tokens", "8", "--min-p", "0.25",
                     "--output", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["runs"][0]["settings"]["min_p"] == 0.25
    records = [json.loads(line) for line in (out / "eager_adapt.jsonl").open()]
    assert {r["settings"]["min_p"] for r in records} == {0.25}


def test_lm_eval_takes_min_p_as_a_model_arg_and_a_generation_kwarg():
    pytest.importorskip("lm_eval")
    from test_lm_eval_mapping import instance

    from eager_eval.frontends.lm_eval.models import EagerHFLM

    engine = ScriptedEngine(mixed_script())
    lm = EagerHFLM("scripted", engine=engine, max_seqs=2, min_p=0.25)
    lm.generate_until([instance("t", 0, "q1", 1, {"until": [], "do_sample": True})])
    assert engine.configs[-1].min_p == 0.25
    lm.generate_until([instance("t", 0, "q1", 1, {"until": [], "min_p": 0.5})])
    assert engine.configs[-1].min_p == 0.5  # the task's generation kwargs, as for top_p


def test_inspect_takes_min_p_as_a_model_option():
    pytest.importorskip("inspect_ai")
    from inspect_ai.model import ChatMessageUser, GenerateConfig

    from eager_eval.frontends.inspect.provider import EagerModelAPI

    engine = ScriptedEngine(mixed_script())
    api = EagerModelAPI("scripted", engine=engine, max_seqs=2, min_p=0.25, batch_window=0.01)
    output = asyncio.run(api.generate([ChatMessageUser(content="q1")], [], "auto",
                                      GenerateConfig(max_tokens=8)))
    assert engine.configs[-1].min_p == 0.25 and output.metadata["settings"]["min_p"] == 0.25


def test_a_sweep_takes_min_p_as_a_key(tmp_path):
    from eager_eval.frontends.cli.sweep import expand_cells, parse_sweep_config, run_command_line

    sweep = parse_sweep_config({"models": ["m"], "tasks": [{"data": "p.jsonl"}],
                                "modes": ["eager_adapt"], "min_p": 0.25,
                                "output": str(tmp_path)})
    (cell,) = expand_cells(sweep)
    args = run_command_line(cell.model, cell.task, cell.config, cell.output_dir,
                            settings=cell.explicit)
    assert cell.config.min_p == 0.25 and args[args.index("--min-p") + 1] == "0.25"


def test_the_hf_engine_applies_min_p():
    """Every token sampled under min_p has a probability (at the run's temperature) of at least
    min_p times the top token's; without it, the same seeds sample tokens below that bar."""
    torch = pytest.importorskip("torch")
    from test_hf_backend import FakeTokenizer, tiny_model

    from eager_eval.core.runner import PromptInput, run
    from eager_eval.engines.hf import HFBackend

    torch.set_num_threads(1)
    model = tiny_model()
    prompts = [PromptInput((11, 12, 13), (), 24), PromptInput((21, 22), (), 24)]
    temperature = 3.0

    def ratios(**settings) -> list[float]:
        """p_T(sampled) / p_T(top) for every reported token (raw logprobs of the whole vocabulary)."""
        config = EagerConfig(mode="eager_init", theta=math.inf, max_seqs=2, think_end=None,
                             seed=3, temperature=temperature, entropy_k=96, **settings)
        backend = HFBackend(model, FakeTokenizer(), config.sampling)
        steps = []
        step = backend.step

        def recording_step():
            out = step()
            steps.extend(out)
            return out

        backend.step = recording_step
        run(prompts, backend, config)
        out = []
        for s in steps:
            by_token = dict(zip(s.topk_ids, s.topk_logprobs))
            lp = by_token[s.token]
            out.append(math.exp((lp - s.topk_logprobs[0]) / temperature))
        return out

    assert min(ratios(min_p=0.3)) >= 0.3 - 1e-6
    assert min(ratios()) < 0.3  # the bar is real: without min_p these seeds go below it
