"""An out-of-memory error in a forward, through each front end: `eager-eval run`, lm-eval's
eager-hf and Inspect's eager provider finish with the records of an uninterrupted run, and the
engine says it recovered (results.json `engine.oom_recoveries` in the CLI's case).

The error is injected into the tiny Llama's forward (`torch.OutOfMemoryError`, as CUDA raises
it) the first time a decode forward takes 16 rows or more: 4 prompts x 4 full-parallel rows.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from eager_eval.engines.registry import EngineOptions, load_engine  # noqa: E402
from support import one_torch_thread, save_tiny_word_model  # noqa: E402,F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = {"mode": "eager_adapt", "max_seqs": 4, "theta": 0.4, "percentile": 50, "seed": 3,
            "entropy_k": 8, "think_end": None}
QUESTIONS = ["the answer is so", "and the answer", "B is the answer so the", "so"]
MAX_NEW_TOKENS = 14


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_word_model(tmp_path_factory.mktemp("words") / "model")


@pytest.fixture
def inject_oom(monkeypatch):
    """Arm it: the next decode forward of 16 rows or more raises torch.OutOfMemoryError once."""
    state = {"armed": False, "raised": 0}
    inner = transformers.LlamaForCausalLM.forward

    @functools.wraps(inner)
    def forward(self, *args, **kwargs):
        ids = kwargs.get("input_ids")
        if state["armed"] and ids is not None and ids.shape[1] == 1 and ids.shape[0] >= 16:
            state["armed"] = False
            state["raised"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB "
                                         "(injected by the test)")
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(transformers.LlamaForCausalLM, "forward", forward)

    def arm():
        state["armed"] = True
        return state

    return arm


def test_cli_run_survives_an_oom_with_the_same_records(model_dir, tmp_path, inject_oom, capsys):
    from eager_eval.frontends.cli import main as cli

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"problem": q, "answer": "7"}) + "\n" for q in QUESTIONS))
    flags = [a for k, v in SETTINGS.items() for a in (f"--{k.replace('_', '-')}", str(v))]

    def run(out: Path) -> tuple[list[dict], dict]:
        assert cli.main(["run", "--model", str(model_dir), "--data", str(data), *flags,
                         "--max-new-tokens", str(MAX_NEW_TOKENS), "--device", "cpu",
                         "--output", str(out), "--no-progress"]) == 0
        records = [json.loads(line) for line in (out / "eager_adapt.jsonl").read_text().splitlines()]
        return records, json.loads((out / "results.json").read_text())["engine"]

    clean, clean_engine = run(tmp_path / "clean")
    assert branched(comparable(r) for r in clean)
    state = inject_oom()
    survived, engine = run(tmp_path / "oom")
    assert state["raised"] == 1 and "out of memory in a decode forward" in capsys.readouterr().err
    assert [comparable(r) for r in survived] == [comparable(r) for r in clean]
    assert clean_engine["oom_recoveries"] == 0 and engine["oom_recoveries"] == 1
    assert engine["max_rows_setting"] == "auto" and engine["max_rows"] < clean_engine["max_rows"]


def test_lm_eval_generate_until_survives_an_oom_with_the_same_records(model_dir, inject_oom):
    from eager_eval.frontends.lm_eval.models import EagerHFLM
    from test_lm_eval_models import generation

    requests = [r for i in range(len(QUESTIONS)) for r in generation(
        "t", i, 4, {"id": i, "answer": "7"}, max_gen_toks=MAX_NEW_TOKENS)]

    def run() -> tuple[list, dict]:
        engine = load_engine(str(model_dir), EngineOptions(device="cpu"))
        lm = EagerHFLM(str(model_dir), engine=engine, **SETTINGS)
        texts = lm.generate_until(requests)
        return [(t, comparable(t.record.to_dict())) for t in texts], engine.info()

    clean, clean_info = run()
    assert branched(r for _, r in clean)
    state = inject_oom()
    survived, info = run()
    assert state["raised"] == 1 and survived == clean
    assert clean_info["oom_recoveries"] == 0 and info["oom_recoveries"] == 1


def test_inspect_eval_survives_an_oom_with_the_same_records(model_dir, tmp_path, inject_oom):
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.model import get_model

    from eager_eval.frontends.inspect.scorers import eager_generate, eager_scorer
    from eager_eval.pipeline.answers import AnswerType

    task = Task(dataset=MemoryDataset([Sample(id=i, input=q, target="7")
                                       for i, q in enumerate(QUESTIONS)]),
                solver=eager_generate(AnswerType.MATH), scorer=eager_scorer(AnswerType.MATH))

    def run(logs: Path) -> tuple[list[dict], dict]:
        engine = load_engine(str(model_dir), EngineOptions(device="cpu"))
        model = get_model(f"eager/{model_dir}", engine=engine, memoize=False,
                          batch_size=len(QUESTIONS), **SETTINGS)
        (log,) = inspect_eval(task, model=model, log_dir=str(logs), display="none",
                              max_tokens=MAX_NEW_TOKENS)
        assert log.status == "success"
        return [comparable(s.output.metadata) for s in log.samples], engine.info()

    clean, clean_info = run(tmp_path / "clean")
    assert branched(clean)
    state = inject_oom()
    survived, info = run(tmp_path / "oom")
    assert state["raised"] == 1 and survived == clean
    assert clean_info["oom_recoveries"] == 0 and info["oom_recoveries"] == 1


def comparable(record: dict) -> dict:
    """What the trees decide: sequences and forks (no wall times or paths)."""
    return {"sequences": record["sequences"], "forks": record["forks"]}


def branched(records) -> bool:
    """The run forked (so the rows were many, and the OOM hit a forward of forked rows)."""
    return sum(len(r["forks"]) for r in records) >= 2
