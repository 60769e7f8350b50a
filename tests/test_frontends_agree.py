"""The three front ends agree: the same AIME 2025 problems, settings and seed give the same
prompts and the same trees through `eager-eval run`, `lm_eval --model eager-hf --tasks aime25`
and `inspect eval tasks/aime25.py --model eager/...`, and each writes the same prompt record.

Fast: all three in this process on a scripted engine (a chat template that opens a thinking
block, per-token distributions from a function). Slow: the three commands on the embedded
SmolLM2, compared through what `eager-eval report` reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scripting import CharTokenizer, hashed_script, peaked

pytest.importorskip("lm_eval")
pytest.importorskip("inspect_ai")

from eager_eval.engines.scripted import ScriptedEngine  # noqa: E402
from eager_eval.core.runner import PromptInput  # noqa: E402
from support import SHARED_DATA, needs_smollm2  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VOCAB = {0: "", **{t: f" {t}" for t in range(1, 40)}}
SETTINGS = {"mode": "eager_adapt", "max_seqs": 3, "theta": 0.9, "percentile": None, "seed": 5}
"""What each front end is given (as flags, model args, -M options): the same settings."""
LIMIT, MAX_NEW_TOKENS = 4, 12
"""Four problems: by their token ids the fourth comes first ("Find the n..." < "Find the s..."),
so a front end that pooled them in any order but the task's would seed them differently."""

needs_aime = pytest.mark.skipif(not (SHARED_DATA / "aime25.jsonl").is_file(),
                                reason="no shared AIME 2025 copy")


_WILD = hashed_script(salt=7, eos_after=9)


def script(prompt, generated):
    """Prompts of even length are calm (one sequence, 6 tokens), the others branch: with the
    first four AIME 2025 problems the second is calm, so EAGer-adapt moves its budget."""
    if len(prompt) % 2 == 0:
        return peaked(0) if len(generated) >= 6 else peaked(5 + len(generated) % 3)
    return _WILD(prompt, generated)


def Engine() -> ScriptedEngine:  # noqa: N802
    """The shipped scripted engine with a tokenizer whose chat template opens a thinking block."""
    return ScriptedEngine(script, vocab=VOCAB, tokenizer=CharTokenizer(VOCAB, template=True,
                                                                       thinking=True),
                          context_length=4096, vocab_size=len(VOCAB))


RUNNING = {"front end": ""}
"""Which front end the test is running now (each one sets it): whose prompts the pipeline got."""


@pytest.fixture
def prompts_seen(monkeypatch) -> dict[str, list[PromptInput]]:
    """The PromptInputs each front end hands the runner (by front end): all three reach it
    through the one pipeline (`pipeline.pool.run_pool`)."""
    from eager_eval.pipeline import pool

    seen: dict[str, list[PromptInput]] = {}
    real_run = pool.run

    def run(prompts, *args, **kwargs):
        seen.setdefault(RUNNING["front end"], []).extend(prompts)
        return real_run(prompts, *args, **kwargs)

    monkeypatch.setattr(pool, "run", run)
    return seen


def cli_records(tmp_path: Path, monkeypatch, engine: ScriptedEngine) -> list[dict]:
    from eager_eval.engines import registry as engines
    from eager_eval.frontends.cli import main as cli

    RUNNING["front end"] = "cli"
    monkeypatch.setattr(engines, "load_engine", lambda *a, **k: engine)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # a model name the CLI's checks accept
    out = tmp_path / "cli"
    flags = [a for k, v in SETTINGS.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    assert cli.main(["run", "--model", str(model), "--data", str(SHARED_DATA / "aime25.jsonl"),
                     "--limit", str(LIMIT), "--max-new-tokens", str(MAX_NEW_TOKENS), *flags,
                     "--output", str(out), "--no-progress"]) == 0
    return [json.loads(line) for line in (out / "eager_adapt.jsonl").read_text().splitlines()]


def lm_eval_records(engine: ScriptedEngine, monkeypatch) -> list[dict]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from eager_eval.frontends.lm_eval.models import EagerHFLM

    RUNNING["front end"] = "lm-eval"
    monkeypatch.setenv("EAGER_EVAL_DATA_DIR", str(SHARED_DATA))
    lm = EagerHFLM("scripted", engine=engine, **SETTINGS)
    manager = TaskManager(include_path=str(REPO / "tasks"), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=["aime25"], task_manager=manager, limit=LIMIT,
                          gen_kwargs={"max_gen_toks": MAX_NEW_TOKENS}, log_samples=True)
    samples = sorted(out["samples"]["aime25"], key=lambda s: s["doc_id"])
    return [json.loads(str(s["filtered_resps"][0])) for s in samples]


def inspect_records(engine: ScriptedEngine, tmp_path: Path, monkeypatch) -> list[dict]:
    from inspect_ai import eval as inspect_eval
    from inspect_ai.model import get_model

    from test_inspect_tasks import load_task_file

    RUNNING["front end"] = "inspect"
    monkeypatch.setenv("EAGER_EVAL_DATA_DIR", str(SHARED_DATA))
    model = get_model("eager/scripted", engine=engine, memoize=False, **SETTINGS)
    (log,) = inspect_eval(load_task_file("aime25").aime25(), model=model, limit=LIMIT,
                          max_tokens=MAX_NEW_TOKENS, log_dir=str(tmp_path / "logs"),
                          display="none")
    assert log.status == "success"
    return [s.output.metadata for s in log.samples]


def comparable(record: dict) -> dict:
    """A record without what only says where it was written: the front end's own place for it
    and the harness's version."""
    return {k: v for k, v in record.items() if k not in ("origin", "versions")}


@needs_aime
def test_the_same_problems_give_the_same_prompts_trees_and_records(tmp_path, monkeypatch,
                                                                   prompts_seen):
    engine = Engine()
    records = {
        "cli": cli_records(tmp_path, monkeypatch, engine),
        "lm-eval": lm_eval_records(engine, monkeypatch),
        "inspect": inspect_records(engine, tmp_path, monkeypatch),
    }
    # the prompts: the same ids, stops, length and thinking state, in the same task order
    cli_prompts = prompts_seen["cli"]
    assert len(cli_prompts) == LIMIT
    assert all(p.opens_thinking for p in cli_prompts)  # the template opened <think>
    for front_end in ("lm-eval", "inspect"):
        seen = prompts_seen[front_end]
        assert [p.tokens for p in seen] == [p.tokens for p in cli_prompts], front_end
        assert [(p.stop, p.opens_thinking) for p in seen] == [
            (p.stop, p.opens_thinking) for p in cli_prompts], front_end
        assert {p.max_new_tokens or MAX_NEW_TOKENS for p in seen} == {MAX_NEW_TOKENS}
    # the records: identical but for where they were written
    cli = [comparable(r) for r in records["cli"]]
    assert [r["id"] for r in cli] == ["I-1", "I-2", "I-3", "I-4"]  # the data file's order
    assert sum(len(r["forks"]) for r in cli) > 0 and len(cli[0]["pool"]["rounds"]) > 1
    assert all(s["correct"] is not None for r in cli for s in r["sequences"])  # graded once
    for front_end in ("lm-eval", "inspect"):
        assert [comparable(r) for r in records[front_end]] == cli, front_end


@needs_aime
def test_the_report_reads_the_same_trees_from_all_three(tmp_path, monkeypatch, prompts_seen):
    """What `eager-eval show` and the report's drill-down read back is the same from each."""
    from eager_eval.report.trees import load_runs

    engine = Engine()
    cli_records(tmp_path, monkeypatch, engine)
    inspect_records(engine, tmp_path, monkeypatch)
    (cli,) = load_runs(tmp_path / "cli")
    (inspect,) = load_runs(tmp_path / "logs")

    def shape(run):
        return [[(s.round, s.index, s.parent, s.fork_position, s.tokens, s.correct)
                 for s in p.sequences] + [(f.round, f.position, f.entropy) for f in p.forks]
                for p in run.prompts]

    assert shape(cli) == shape(inspect) and cli.pool_rounds == inspect.pool_rounds


# --- the embedded model: the three commands ------------------------------------------------


def command(args: list[str], cwd: Path, env_extra: dict[str, str]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "EAGER_EVAL_DATA_DIR": str(SHARED_DATA), **env_extra}
    exe = Path(sys.executable).with_name(args[0])
    done = subprocess.run([str(exe), *args[1:]], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


@pytest.mark.slow
@needs_smollm2
@needs_aime
def test_the_three_commands_grow_the_same_trees_on_smollm2(tmp_path):
    from eager_eval.report.trees import load_runs

    settings = {**SETTINGS, "theta": 2.0, "max_seqs": 3}
    n, tokens = 2, 16
    flags = [a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    command(["eager-eval", "run", "--model", "smollm2-135m", "--data",
             str(SHARED_DATA / "aime25.jsonl"), "--limit", str(n), "--max-new-tokens", str(tokens),
             "--threads", "1", *flags, "--output", str(tmp_path / "cli"), "--no-progress"],
            tmp_path, {})
    model_args = ",".join(f"{k}={v}" for k, v in settings.items())
    command(["lm_eval", "--model", "eager-hf", "--model_args",
             f"pretrained=smollm2-135m,{model_args}", "--device", "cpu", "--tasks", "aime25",
             "--include_path", str(REPO / "tasks"), "--limit", str(n), "--gen_kwargs",
             f"max_gen_toks={tokens}", "--output_path", str(tmp_path / "lm"), "--log_samples"],
            tmp_path, {})
    command(["inspect", "eval", "tasks/aime25.py", "--model",  # Inspect takes relative paths
             "eager/smollm2-135m", *[a for k, v in settings.items() for a in ("-M", f"{k}={v}")],
             "--limit", str(n), "--max-tokens", str(tokens), "--log-dir", str(tmp_path / "logs"),
             "--display", "none"], REPO, {})

    def trees(path: Path):
        (run,) = load_runs(path)
        return [(p.record.id, p.record.prompt, comparable_sequences(p.record)) for p in run.prompts]

    def comparable_sequences(record):
        return [(s.round, s.index, s.parent, s.fork_position, s.tokens, s.answer, s.correct)
                for s in record.sequences] + [(f.position, f.entropy) for f in record.forks]

    cli = trees(tmp_path / "cli")
    assert [i for i, _, _ in cli] == ["I-1", "I-2"]
    assert any(len(seqs) > 1 for _, _, seqs in cli), "theta 2.0 forks on SmolLM2's entropies"
    assert trees(tmp_path / "lm") == cli
    assert trees(tmp_path / "logs") == cli
