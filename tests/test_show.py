"""Pins `eager-eval show` (eager_eval/report/show.py) and the reading behind it and the report's
drill-down (eager_eval/report/trees.py) on the outputs of all three front ends: a CLI run on a
tiny model, lm-eval sample records written by the adapter's own functions, an Inspect log.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from test_cli import math_file, run_args, tiny_model_dir  # noqa: F401 (fixtures)

from eager_eval.frontends.cli import main as cli
from eager_eval.report.trees import NoTrees, describe_pool, load_runs
from eager_eval.report.show import render
from test_report_helpers import EAGER_DEMO, LM_EVAL


def text_of(renderables) -> str:
    console = Console(width=400, record=True, file=open("/dev/null", "w"))
    for item in renderables:
        console.print(item)
    return console.export_text()


def write_scripted_run(out: Path, modes=("full_parallel", "eager_adapt")) -> Path:
    """A run directory written by the CLI's own writer (outputs.write_run_dir) from runs on the
    scripted model of test_inspect_provider: its odd prompts branch at most positions and fill
    their cap, its even ones never branch, so EAGer-adapt always moves budget (a tiny random
    model may or may not). Returns results.json."""
    from eager_eval.core.config import EagerConfig
    from eager_eval.engines.registry import EngineOptions
    from eager_eval.engines.scripted import ScriptedEngine, mixed_script
    from eager_eval.pipeline.outputs import MethodRun, Problem, write_run_dir
    from eager_eval.pipeline.pool import Label, Pool, pool_prompt, run_pool
    from eager_eval.pipeline.prompts import Prompt, PromptEncoder, PromptSettings

    engine = ScriptedEngine(mixed_script())
    encoder = PromptEncoder.for_engine(engine)
    texts = [f"q{i}" for i in range(6)]
    problems = [Problem(f"p{i}", f"(made-up question {t})", "7") for i, t in enumerate(texts)]
    prompts = [pool_prompt(encoder, Prompt(t), p.id, label=Label(p.target, "math"),
                           text=p.problem) for t, p in zip(texts, problems)]
    runs = []
    for mode in modes:
        config = EagerConfig(mode=mode, theta=0.9, max_seqs=4, percentile=None, think_end=None,
                             seed=5, max_new_tokens=30)
        pool = Pool(mode, prompts, config, "scripted", EngineOptions("scripted"), PromptSettings())
        runs.append(MethodRun.of(run_pool(pool, engine)))
    return write_run_dir(out, runs, problems, answer_type="math", command="(test)",
                         model="scripted", task="made-up", engine_info={"backend": "scripted"})


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory) -> Path:
    return write_scripted_run(tmp_path_factory.mktemp("scripted") / "run").parent


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_model_dir) -> Path:  # noqa: F811
    """An eager_adapt run on the tiny random model: theta 1.0 forks at once (a real model's
    tree through the CLI; whether budget is left to move depends on its samples)."""
    out = tmp_path_factory.mktemp("show") / "run"
    data = out.parent / "math.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"what is {i} + 4",
                                        "answer": str(i + 4)}) + "\n" for i in range(3, 7)))
    assert cli.main(run_args(tiny_model_dir, data, out, "--mode", "eager_adapt")) == 0
    return out


def records(run_dir: Path, method: str = "eager_adapt") -> list[dict]:
    return [json.loads(line) for line in (run_dir / f"{method}.jsonl").read_text().splitlines()]


def test_cli_outputs_record_each_forks_round_context_and_trees(cli_run):
    for record in records(cli_run):
        sequences = {(s["round"], s["index"]): s for s in record["sequences"]}
        for event in record["forks"]:
            child = sequences[(event["round"], event["child"])]
            assert child["fork_position"] == event["position"]
            assert set(event["context"]) == {"before", "parent", "child"}
            assert event["context"]["parent"] != event["context"]["child"]  # top-2 differ
        assert [t["round"] for t in record["trees"]] == sorted({s["round"] for s in record["sequences"]})


def test_show_draws_every_fork_sequence_and_grade_of_the_prompt(cli_run):
    (run,) = [r for r in load_runs(cli_run)]
    prompt = run.prompts[0]
    text = text_of(render(run, prompt))
    record = records(cli_run)[0]
    assert len(prompt.sequences) == len(record["sequences"]) and len(prompt.forks) > 0
    for event in record["forks"]:
        assert (f"fork @ token {event['position']} · H {event['entropy']:.3f} > "
                f"τ {event['threshold']:.3f}") in text
        assert f"“{' '.join(event['context']['child'].split())}” (seq {event['child']})" in text
    for seq in record["sequences"]:
        assert f"seq {seq['index']} {'✓' if seq['correct'] else '✗'}" in text
    rounds = sorted({s["round"] for s in record["sequences"]})
    for r in rounds:
        assert f"Round {r} · " in text
    assert "Budget M·N = 3·4 = 12 sequences" in text


def test_show_picks_eager_adapt_and_its_most_reallocated_prompt(scripted_run, capsys,
                                                                 monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    assert cli.main(["show", str(scripted_run)]) == 0
    out = capsys.readouterr().out
    (run,) = [r for r in load_runs(scripted_run) if r.method == "eager_adapt"]
    best = max(run.prompts, key=lambda p: (p.reallocated, len(p.sequences), -p.index))
    assert run.moved > 0 and f"Prompt #{best.index} · {best.label} (the prompt with the most reallocated" in out
    assert f"In all, {run.moved} sequences moved" in out


def test_show_errors_are_one_line_and_exit_2(cli_run, capsys, tmp_path):
    assert cli.main(["show", str(cli_run), "--method", "full_parallel"]) == 2
    assert "no run of method 'full_parallel'" in capsys.readouterr().err
    assert cli.main(["show", str(cli_run), "--prompt", "99"]) == 2
    assert "--prompt 99 is not in this run (prompts 0..3)" in capsys.readouterr().err
    assert cli.main(["show", str(tmp_path)]) == 2
    assert "no per-prompt trees found" in capsys.readouterr().err
    with pytest.raises(NoTrees):
        load_runs(tmp_path / "missing")


def test_fixtures_written_before_fork_context_still_read():
    (adapt,) = [r for r in load_runs(EAGER_DEMO) if r.method == "eager_adapt"]
    prompt = adapt.prompts[1]
    assert [t.round for t in prompt.trees] == [0, 1] and prompt.reallocated == 2
    assert [(f.round, f.position) for f in prompt.forks] == [(0, 5), (0, 20), (0, 30), (1, 7)]
    assert all(f.context is None for f in prompt.forks)
    assert "(no text recorded)" in text_of(render(adapt, prompt))
    (lm,) = load_runs(LM_EVAL)
    assert lm.harness == "lm-eval" and lm.method == "eager_adapt" and len(lm.prompts) == 5
    assert lm.prompts[1].n_correct == 0  # graded here from the texts, by the metrics' rule


# --- lm-eval: the adapter's own records ------------------------------------------------------

pytest.importorskip("lm_eval")

from test_lm_eval_mapping import BOX, evaluator_requests, run_texts  # noqa: E402

from eager_eval.core.config import EagerConfig  # noqa: E402
from eager_eval.frontends.lm_eval import tasks as lm_eval_tasks  # noqa: E402
from eager_eval.frontends.lm_eval.models import group_statistics  # noqa: E402
from eager_eval.pipeline.record import fork_context  # noqa: E402


def test_lm_eval_samples_read_back_as_trees_graded_by_the_metrics_rule(tmp_path):
    requests = evaluator_requests({"eager_demo": [("hard one", 4), ("easy one", 4)]})
    config = EagerConfig(mode="eager_adapt", max_seqs=3, theta=2.0, percentile=None)
    decode = lambda ids: "".join(BOX.get(t, f"<{t}>") for t in ids)  # noqa: E731
    texts, (outcome,), _ = run_texts(requests, config=config)  # decodes as `decode` does
    folder = tmp_path / "out" / "tiny"
    folder.mkdir(parents=True)
    date = "2025-06-02T09-30-00.000001"
    lines = []
    for doc_id, doc in enumerate(outcome.group.docs):
        (record,) = lm_eval_tasks.all_sequences([[texts[doc.slots[0]]]], [doc.instance.doc])
        lines.append({"doc_id": doc_id, "doc": {"problem": doc.context, "answer": "7",
                                                "eager_answer_type": "math"},
                      "target": "7", "filtered_resps": [str(record)], "filter": "all"})
    (folder / f"samples_eager_demo_{date}.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines))
    results = {"results": {"eager_demo": {"pass_at_k,all": 0.5}}, "configs": {},
               "config": {"model": "eager-hf", "model_args": "pretrained=tiny",
                          "eager_eval": {"settings": config.to_dict(),
                                         "tasks": {"eager_demo": [group_statistics(outcome)]}}}}
    (folder / f"results_{date}.json").write_text(json.dumps(results))

    (run,) = load_runs(tmp_path / "out")
    assert (run.harness, run.method, run.task) == ("lm-eval", "eager_adapt", "eager_demo")
    hard, easy = outcome.result.prompts
    shown = run.prompts[0]
    assert len(shown.sequences) == hard.n_sequences > len(easy.sequences)
    expected = [fork_context(t.sequences[e.parent], t.sequences[e.child], e.position, decode)
                for t in hard.trees for e in t.branch_events]
    assert [f.context for f in shown.forks] == expected
    assert [s.correct for s in shown.sequences] == [t.endswith("{7}") for t in hard.texts]
    assert [r.round for r in run.pool_rounds] == [r.round for r in outcome.result.rounds]
    assert "fork @ token 0" in text_of(render(run, shown))


# --- Inspect: a log of the provider --------------------------------------------------------------

pytest.importorskip("inspect_ai")

from inspect_ai.model import get_model  # noqa: E402
from test_inspect_provider import (  # noqa: E402
    SETTINGS,
    ScriptedEngine,
    core_run,
    mixed_script,
    question_task,
    run_eval,
)


def test_inspect_log_reads_back_as_the_cores_trees(tmp_path):
    texts = [f"q{i}" for i in range(6)]
    model = get_model("eager/scripted", engine=ScriptedEngine(mixed_script()), memoize=False,
                      **SETTINGS)
    log = run_eval(question_task(texts, ["5"] * 6), model, tmp_path)
    (run,) = load_runs(tmp_path)
    assert (run.harness, run.method, len(run.prompts)) == ("inspect", "eager_adapt", 6)
    core = core_run(texts, EagerConfig(**SETTINGS, max_new_tokens=30), mixed_script())
    for shown, sample in zip(run.prompts, log.samples):
        expected = core.prompts[sample.output.metadata["pool"]["index"]]
        assert [len(t.sequences) for t in shown.trees] == [len(t.sequences) for t in expected.trees]
        assert [(f.round, f.position, f.child) for f in shown.forks] == [
            (t.round, e.position, e.child) for t in expected.trees for e in t.branch_events]
        assert all(f.context is not None for f in shown.forks)
        assert [s.correct for s in shown.sequences] == [t.strip().endswith("5") and
                                                       t.split()[-1] == "5" for t in expected.texts]
    assert [r.round for r in run.pool_rounds] == [r.round for r in core.rounds]
    assert any(line.startswith("Round 1:") for line in describe_pool(run))


# --- the pool's story: why nothing moved --------------------------------------------------------


def pool_of(trees_per_prompt: list[list[tuple[int, bool]]], method: str = "eager_adapt",
            correct: bool = False):
    """A RunTrees whose prompts hold round-0 trees of (sequences, hit_cap) as given."""
    from eager_eval.pipeline.record import PromptRecord, SequenceRecord
    from eager_eval.report.trees import PromptTrees, RunTrees, Tree

    prompts = []
    for i, trees in enumerate(trees_per_prompt):
        shown = [Tree(0, [SequenceRecord(j, 0, None, 0, "x", correct=correct) for j in range(n)],
                      [], cap=4, hit_cap=hit) for n, hit in trees]
        record = PromptRecord(str(i), i, "q", None, None, [s for t in shown for s in t.sequences])
        prompts.append(PromptTrees(i, str(i), record, shown))
    return RunTrees(Path("."), "cli", "m", "t", method, {"max_seqs": 4}, prompts)


@pytest.mark.parametrize("trees, method, correct, reason", [
    ([[(4, True)], [(4, True)]], "eager_adapt", False, "spent the whole budget"),
    ([[(1, False)], [(2, False)]], "eager_adapt", False, "no prompt hit the cap M"),
    ([[(4, True)], [(1, False)]], "eager_adapt", False, "no reallocation round ran"),
    ([[(1, False)], [(2, False)]], "eager", True, "every prompt already had a correct sequence"),
    ([[(4, True)], [(4, True)]], "eager", False, "spent the whole budget"),
])
def test_no_reallocation_says_why(trees, method, correct, reason):
    """Every prompt at the cap and nothing left unspent is not "no prompt hit the cap" (a
    fresh clone's lm-eval and Inspect runs showed that)."""
    (line,) = [x for x in describe_pool(pool_of(trees, method, correct)) if "No reallocation" in x]
    assert reason in line


def test_counts_take_the_right_number_in_the_html_summaries():
    from eager_eval.report.drilldown import _prompt_block, _run_block

    run = pool_of([[(1, False)]], correct=True)
    html = _run_block(0, run, None) + _prompt_block(0, run, run.prompts[0], False)
    assert "1 prompt " in html and "1 sequence ·" in html and "0 forks" in html
    assert "1 sequences" not in html and "1 prompts" not in html
