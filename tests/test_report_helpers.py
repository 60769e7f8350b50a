"""Shared by the report tests (no tests here): fixture paths, Inspect logs written through
inspect_ai's API, CSV reading."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "report"
EAGER_DEMO = FIXTURES / "eager_demo"
LM_EVAL = FIXTURES / "lm_eval"


def inspect_log(model: str, task: str, model_args: dict[str, Any], metrics: dict[str, float], *,
                samples: list[dict[str, Any]] | None = None, status: str = "success",
                temperature: float | None = None) -> Any:
    """An EvalLog as the eager provider would leave it (made-up numbers, no real questions)."""
    from inspect_ai.log import (
        EvalConfig,
        EvalDataset,
        EvalLog,
        EvalMetric,
        EvalResults,
        EvalSample,
        EvalScore,
        EvalSpec,
    )
    from inspect_ai.model import GenerateConfig, ModelOutput

    spec = EvalSpec(
        created="2025-06-03T08:00:00+00:00", task=task, dataset=EvalDataset(name=task),
        model=model, model_args=model_args, config=EvalConfig(),
        model_generate_config=GenerateConfig(temperature=temperature),
    )
    n = len(samples) if samples else int(metrics.get("n_prompts", 4))
    results = EvalResults(total_samples=n, completed_samples=n, scores=[EvalScore(
        name="eager_scorer", scorer="eager_scorer",
        metrics={name: EvalMetric(name=name, value=value) for name, value in metrics.items()},
    )])
    logged = []
    for i, meta in enumerate(samples or []):
        output = ModelOutput.from_content(model, f"(made-up answer {i})")
        output.metadata = dict(meta)
        logged.append(EvalSample(id=i + 1, epoch=1, input=f"(made-up question {i})", target="1",
                                 output=output))
    return EvalLog(eval=spec, status=status, results=results, samples=logged or None)


def made_up_record(index: int, tokens_generated: int, forks: list[tuple[int, float]],
                   settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """A prompt record (docs/FORMAT.md) as the eager provider logs it: one root and a child per
    fork (position, entropy), each child one token past its fork; #T = `tokens_generated`."""
    from eager_eval.pipeline.record import ForkRecord, PromptRecord, SequenceRecord

    root = tokens_generated - len(forks)
    sequences = [SequenceRecord(0, 0, None, 0, "(made up)", "eos", 0, [0] * root, answer="0",
                                correct=False)]
    sequences += [SequenceRecord(i + 1, 0, 0, pos, "(made up)", "eos", i + 1, [0] * (pos + 1),
                                 answer="0", correct=False) for i, (pos, _) in enumerate(forks)]
    return PromptRecord(
        id=str(index + 1), index=index, prompt="(made-up question)", target="1",
        answer_type="math", sequences=sequences,
        forks=[ForkRecord(0, pos, 0, i + 1, entropy, 2.0) for i, (pos, entropy) in enumerate(forks)],
        settings=dict(settings or {}), cons_index=0).to_dict()


SMOLLM3_INIT_SAMPLES = [
    made_up_record(0, 500, []),
    made_up_record(1, 700, [(40, 2.2)]),
    made_up_record(2, 800, [(12, 2.5), (300, 2.1)]),
    made_up_record(3, 1000, [(5, 2.9), (77, 2.05), (150, 2.4)]),
]
SMOLLM3_INIT_METRICS = {"pass_at_k": 0.5, "cons_at_k": 0.25, "tokens_generated": 3000,
                        "seqs_mean": 2.5, "n_prompts": 4}
"""No pass_at_1, pass_rate, tokens_in_outputs: the table must show them as missing."""
SMOLLM3_FP_METRICS = {"pass_at_k": 0.5, "pass_at_1": 0.3, "cons_at_k": 0.25, "pass_rate": 0.3,
                      "tokens_generated": 6000, "seqs_mean": 4.0, "seqs_min": 4, "seqs_max": 4,
                      "n_prompts": 4}


def write_inspect_fixtures(directory: Path) -> dict[str, Path]:
    """Two Inspect logs of SmolLM3-3B on aime25: EAGer-init (.eval, with samples) and Full
    Parallel (.json, header numbers only)."""
    from inspect_ai.log import write_eval_log

    directory.mkdir(parents=True, exist_ok=True)
    init = inspect_log("eager/HuggingFaceTB/SmolLM3-3B", "aime25",
                       {"mode": "eager_init", "theta": 2.0, "max_seqs": 4, "temperature": 0.6},
                       SMOLLM3_INIT_METRICS, samples=SMOLLM3_INIT_SAMPLES)
    fp = inspect_log("eager/HuggingFaceTB/SmolLM3-3B", "aime25",
                     {"mode": "full_parallel", "max_seqs": 4}, SMOLLM3_FP_METRICS, temperature=0.6)
    paths = {"init": directory / "smollm3-init.eval", "fp": directory / "smollm3-fp.json"}
    write_eval_log(init, str(paths["init"]))
    write_eval_log(fp, str(paths["fp"]))
    return paths


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
