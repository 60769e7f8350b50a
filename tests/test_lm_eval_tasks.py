"""The task side of the lm-eval integration: datasets, the all-sequences filter, the metrics.

No model and no lm-eval run here; GPQA data are made-up questions written by the test (GPQA
content is never committed).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("datasets")

from eager_eval.pipeline.datasets import DATA_DIR_ENV, DataFileError, load_aime25  # noqa: E402
from eager_eval.frontends.lm_eval import tasks  # noqa: E402
from eager_eval.pipeline.metrics import CONFIDENCE_VOTES  # noqa: E402
from eager_eval.pipeline.record import PromptRecord, build_record  # noqa: E402
from eager_eval.core.results import (  # noqa: E402
    BranchEvent,
    FinishReason,
    PromptResult,
    RunResult,
    SequenceResult,
    TreeResult,
)
from support import SHARED_DATA  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def prompt_result(texts: list[str]) -> PromptResult:
    """One tree: a root of 6 tokens and children forked at position 2 (4 tokens of their own)."""
    seqs = [SequenceResult(i, 0, None if i == 0 else 0, 0 if i == 0 else 2, 10 + i, [5] * 6,
                           text, FinishReason.EOS) for i, text in enumerate(texts)]
    events = [BranchEvent(2, 0, i, 2.4, 2.0, 5, 6) for i in range(1, len(texts))]
    return PromptResult(0, [TreeResult(0, 0, 4, 2.0, seqs, events, hit_cap=True)])


def slot_record(texts: list[str], target: str | None = None) -> PromptRecord:
    """The record the adapter builds for one doc (graded when it has the doc's label)."""
    run = RunResult({"max_seqs": 4, "mode": "eager_adapt"}, [prompt_result(texts)], [])
    return build_record(run, 0, id="d0", prompt="(made-up)", target=target,
                        answer_type=None if target is None else "math")


def test_filter_hands_metrics_every_sequence_the_adapter_kept():
    doc, other = {"answer": "70"}, {"answer": "70"}
    texts = ["\\boxed{12}", "\\boxed{70}", "\\boxed{12}", "so 70"]  # a 2-2 tie: 12 came first
    record = slot_record(texts, target="70")
    slots = [tasks.SlotText(t, record) for t in texts[:2]]
    records = tasks.all_sequences([slots, ["\\boxed{70}", tasks.NO_SEQUENCE]], [doc, other])
    assert [s["text"] for s in records[0]["sequences"]] == texts  # all 4, not the 2 slots
    assert records[0]["forks"][0] == {
        "round": 0, "position": 2, "parent": 0, "child": 1, "entropy": 2.4, "threshold": 2.0,
        "parent_token": 5, "child_token": 6, "context": None}
    assert [s["text"] for s in records[1]["sequences"]] == ["\\boxed{70}"]  # not EAGer: slots
    assert records[1]["sequences"][0]["tokens"] is None and records[1]["target"] is None

    metrics = tasks.process_math(doc, [records[0]])
    recorded = {k: v for k, v in metrics.items() if k not in CONFIDENCE_VOTES}
    assert recorded == {"pass_at_k": 1.0, "pass_at_1": 0.5, "cons_at_k": 0.0, "pass_rate": 0.5,
                        "tokens_generated": 6 + 3 * 4, "n_sequences": 4}
    assert all(math.isnan(metrics[k]) for k in CONFIDENCE_VOTES)  # no confidence recorded
    assert set(metrics) == set(tasks.METRICS)


def test_metrics_count_the_stored_grades_and_never_grade_again(monkeypatch):
    """A record the adapter graded is counted from its flags: the grader is never called."""
    record = slot_record(["\\boxed{1}", "\\boxed{2}"], target="2")
    logged = tasks.all_sequences([[tasks.SlotText("x", record)]], [{"answer": "2"}])[0]
    import eager_eval.pipeline.metrics as metrics

    monkeypatch.setattr(metrics, "grade_texts", lambda *a, **k: pytest.fail("graded again"))
    assert tasks.process_math({"answer": "2"}, [logged])["pass_at_1"] == 0.5


def test_an_ungraded_record_is_graded_once_into_the_samples_file():
    record = slot_record(["\\boxed{1}", "\\boxed{2}"])  # no label in the doc
    (logged,) = tasks.all_sequences([[tasks.SlotText("x", record)]], [{"answer": "2"}])
    assert [s["correct"] for s in logged["sequences"]] == [None, None]
    assert tasks.process_math({"answer": "2"}, [logged])["pass_at_k"] == 1.0
    assert [s["correct"] for s in logged["sequences"]] == [False, True]  # what --log_samples writes
    assert json.loads(str(logged))["target"] == "2"  # lm-eval's sanitize_list str()s it: JSON


def test_slot_text_keeps_its_record_through_lm_eval_s_cache():
    """--use_cache stores slot strings with SqliteDict (pickle): the record comes back."""
    import pickle

    from lm_eval.api.model import CachingLM, hash_args

    record = slot_record(["\\boxed{3}"], target="3")
    text = tasks.SlotText("\\boxed{3}", record)
    back = pickle.loads(pickle.dumps(text))
    assert back == text and back.record.to_dict() == record.to_dict()

    class Echo:  # an LM whose generate_until hands back slot texts
        def set_cache_hook(self, hook):
            self.hook = hook

        def generate_until(self, requests):
            for request in requests:
                self.hook.add_partial("generate_until", request.args, text)
            return [text for _ in requests]

    from lm_eval.api.instance import Instance

    request = Instance("generate_until", {"answer": "3"}, ("q", {"do_sample": False}), 0)
    lm = CachingLM(Echo(), str(Path(pytest.importorskip("tempfile").mkdtemp()) / "cache.db"))
    lm.generate_until([request])
    cached = lm.dbdict[hash_args("generate_until", request.args)]
    assert isinstance(cached, tasks.SlotText) and cached.record.to_dict() == record.to_dict()


def test_metrics_without_the_filter_read_slot_strings():
    doc = {"answer": "B"}
    assert tasks.process_choice(doc, ["The answer is (B)"])["pass_at_k"] == 1.0
    got = tasks.process_choice(doc, [["\\boxed{A}", "\\boxed{B}", tasks.NO_SEQUENCE]])
    assert got["n_sequences"] == 2 and got["pass_at_1"] == 0.5 and got["tokens_generated"] == 0


def test_metrics_of_a_prompt_with_no_sequence():
    metrics = tasks.process_math({"answer": "3"}, [[tasks.NO_SEQUENCE]])
    assert {k: v for k, v in metrics.items() if k not in CONFIDENCE_VOTES} == {
        "pass_at_k": 0.0, "pass_at_1": 0.0, "cons_at_k": 0.0, "pass_rate": 0.0,
        "tokens_generated": 0, "n_sequences": 0}
    assert all(math.isnan(metrics[k]) for k in CONFIDENCE_VOTES)


def test_total_sums():
    assert tasks.total([3, 4, 5]) == 12


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    return tmp_path


@pytest.mark.skipif(not (SHARED_DATA / "aime25.jsonl").is_file(), reason="no shared AIME 2025 copy")
def test_aime25_dataset_uses_the_shared_prompts(data_dir):
    (data_dir / "aime25.jsonl").symlink_to(SHARED_DATA / "aime25.jsonl")
    rows = tasks.aime25_dataset(version=1.0, pretrained="x")["test"]
    problems = load_aime25()
    assert len(rows) == len(problems) == 30
    assert rows[0]["prompt"] == problems[0].prompt  # the Inspect task's prompt, word for word
    assert rows[0]["answer"] == rows[0]["eager_target"] == problems[0].answer
    assert rows[0]["eager_answer_type"] == "math"


def test_missing_data_file_names_the_variable_and_the_file(data_dir):
    with pytest.raises(DataFileError, match=f"{DATA_DIR_ENV}=.* has no aime25.jsonl"):
        tasks.aime25_dataset()
    with pytest.raises(DataFileError, match=f"{DATA_DIR_ENV}=.* has no gpqa_diamond.csv"):
        tasks.gpqa_diamond_dataset()


def write_gpqa_fixture(path: Path, n: int = 5) -> None:
    """GPQA-shaped rows with made-up questions (never real GPQA content)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["Record ID", "Question", "Correct Answer",
                                     "Incorrect Answer 1", "Incorrect Answer 2",
                                     "Incorrect Answer 3"])
        writer.writeheader()
        for i in range(n):
            wrong = {f"Incorrect Answer {j}": str(2 * i + j) for j in (1, 2, 3)}
            writer.writerow({"Record ID": f"rec{i}", "Question": f"What is {i} + {i}?",
                             "Correct Answer": str(2 * i), **wrong})


def test_gpqa_dataset_shuffles_choices_once_and_keeps_the_letter(data_dir):
    write_gpqa_fixture(data_dir / "gpqa_diamond.csv")
    rows = tasks.gpqa_diamond_dataset()["test"]
    again = tasks.gpqa_diamond_dataset()["test"]
    assert len(rows) == 5 and list(rows) == list(again)  # fixed seed: the same order every run
    for i, row in enumerate(rows):
        assert row["choices"]["ABCD".index(row["answer"])] == str(2 * i)
        assert f"{row['answer']}) {2 * i}" in row["prompt"]
        assert row["eager_answer_type"] == "choice" and row["eager_target"] == row["answer"]
    assert len({row["answer"] for row in rows}) > 1  # shuffled, not always A


def test_eager_demo_dataset():
    rows = tasks.eager_demo_dataset()["test"]
    assert len(rows) == 12
    assert rows[0]["prompt"].endswith("\\boxed{}.") and rows[0]["eager_target"] == rows[0]["answer"]


@pytest.mark.parametrize("name", ["aime25", "gpqa_diamond", "eager_demo"])
def test_task_yamls_declare_the_metrics(name):
    lm_eval_yaml = pytest.importorskip("lm_eval.tasks._yaml_loader")
    config = lm_eval_yaml.load_yaml(str(REPO / "tasks" / f"{name}.yaml"), resolve_func=True)
    assert config["task"] == name
    assert [m["metric"] for m in config["metric_list"]] == list(tasks.METRICS)
    aggregations = {m["metric"]: m["aggregation"] for m in config["metric_list"]}
    assert aggregations.pop("tokens_generated") is tasks.total
    assert set(aggregations.values()) == {"mean"}
    assert config["filter_list"][0]["filter"][0]["filter_fn"] is tasks.all_sequences
    assert config["custom_dataset"].__module__ == tasks.__name__
