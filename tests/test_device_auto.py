"""device=auto, every front end's default: on a machine with CUDA each one runs on it.

No GPU is here, so CUDA is faked: torch.cuda.is_available / device_count / current_device /
is_bf16_supported say "one GPU", and the weights are a stand-in that records the device it was
moved to (no tensor moves). Everything else is the production path: each front end's own
argument parsing, `EngineOptions`, `engines.hf_engine.load`, `models.load_model_and_tokenizer`
(`resolve_device`, `check_device`, `torch_dtype`), the engine's `info()` and what each output
records. The runs themselves decode on a ScriptedBackend (the stand-in weights cannot), so the
CLI, sweep and Inspect runs go to the end and write their outputs.

On this machine (no CUDA), the same defaults record the CPU: `engine.device` is what ran,
never "auto".
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from eager_eval.engines import models as models_module
from eager_eval.engines.devices import DeviceError, check_device, resolve_device
from eager_eval.engines.hf_engine import HFEngine
from eager_eval.engines.registry import EngineOptions
from eager_eval.engines.scripted import ScriptedBackend, hashed_script
from eager_eval.frontends.cli import main as cli
from support import save_tiny_word_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SMALL = ("--max-seqs", "2", "--max-new-tokens", "6", "--theta", "1.0", "--percentile", "none",
         "--entropy-k", "5", "--no-progress")
"""CLI settings that fit the 10-word model."""


class StandInWeights:
    """What `load_model_and_tokenizer` does to a model, recorded: `.to(device)` and `.eval()`.
    Enough of a model for HFEngine (device, dtype, config, output embeddings, and the
    attention interface its backend's cache needs: hf_slots.check_model)."""

    _supports_attention_backend = True

    def __init__(self, dtype: torch.dtype, vocab_size: int) -> None:
        self.dtype = dtype
        self.device = torch.device("cpu")
        self.moved_to: list[torch.device] = []
        self.config = SimpleNamespace(vocab_size=vocab_size, max_position_embeddings=128)
        self.generation_config = None

    def to(self, device):
        self.moved_to.append(torch.device(device))
        self.device = torch.device(device)
        return self

    def eval(self):
        return self

    def get_output_embeddings(self):
        return None


@pytest.fixture(scope="module")
def word_model(tmp_path_factory) -> Path:
    return save_tiny_word_model(tmp_path_factory.mktemp("words"))


@pytest.fixture
def loaded(monkeypatch) -> list[StandInWeights]:
    """Every model `load_model_and_tokenizer` loads: its real tokenizer, stand-in weights; each
    run decodes on a ScriptedBackend over the 10 words (EOS 0)."""
    from transformers import AutoTokenizer

    weights: list[StandInWeights] = []

    def from_pretrained(resolved, pretrained, torch_dtype):
        weights.append(StandInWeights(torch_dtype, vocab_size=10))
        return weights[-1], AutoTokenizer.from_pretrained(pretrained)

    def new_backend(self, config):
        self.verify(config)
        return ScriptedBackend(hashed_script(vocab=10), greedy=config.temperature == 0)

    monkeypatch.setattr(models_module, "_from_pretrained", from_pretrained)
    monkeypatch.setattr(HFEngine, "new_backend", new_backend)
    return weights


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch says: one CUDA device (cuda:0), bf16-capable. No tensor ever goes there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


CUDA0 = torch.device("cuda", 0)


def math_file(directory: Path) -> Path:
    path = directory / "math.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"what is {i} + 4",
                                        "answer": str(i + 4)}) + "\n" for i in range(2)))
    return path


# --- resolve_device / check_device --------------------------------------------------------------


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    mps = torch.backends.mps
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(mps, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == "cpu"
    monkeypatch.setattr(mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps"
    assert str(check_device("mps")) == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("AUTO") == "cuda"
    assert check_device("cuda") == torch.device("cuda", 1), "the current device, by number"
    assert resolve_device("cpu") == "cpu", "a named device is kept"


def test_options_default_to_auto_and_resolve_to_the_device_that_runs(fake_cuda):
    assert EngineOptions().device == "auto"
    assert EngineOptions().resolved_device() == "cuda:0"
    assert EngineOptions(device="cpu").resolved_device() == "cpu"
    assert EngineOptions().fingerprint()["device"] == "cuda"


@pytest.mark.parametrize("device, message", [
    ("cuda:3", "this machine has 1 CUDA device(s) (cuda:0..cuda:0)"),
    ("banana", "'banana' is not a valid device"),
    ("xla", "'xla' is not supported"),
])
def test_a_device_that_is_not_there_is_one_line_even_with_cuda(fake_cuda, device, message):
    with pytest.raises(DeviceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        EngineOptions(device=device).check()


# --- each front end with CUDA present ----------------------------------------------------------


def test_cli_run_defaults_to_cuda_and_records_it(fake_cuda, loaded, word_model, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--model", str(word_model), "--data", str(math_file(tmp_path)),
                     "--output", str(out), "--mode", "eager_init", *SMALL]) == 0
    assert [w.moved_to for w in loaded] == [[CUDA0]]
    assert loaded[0].dtype == torch.bfloat16, "auto dtype on CUDA: bf16"
    engine = json.loads((out / "results.json").read_text())["engine"]
    assert (engine["device"], engine["dtype"]) == ("cuda:0", "bfloat16")
    assert f"{word_model} on cuda:0 (device=auto), bfloat16" in capsys.readouterr().err
    assert "torch threads" not in capsys.readouterr().err, "CPU threads are not set for a GPU"


def test_cli_demo_defaults_to_cuda(fake_cuda, loaded, word_model, tmp_path):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--model", str(word_model), "--limit", "1", "--modes", "eager_init",
                     "--output", str(out), *SMALL]) == 0
    assert json.loads((out / "results.json").read_text())["engine"]["device"] == "cuda:0"


def test_an_explicit_cpu_is_kept_where_cuda_is(fake_cuda, loaded, word_model, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", "--model", str(word_model), "--data", str(math_file(tmp_path)),
                     "--output", str(out), "--device", "cpu", *SMALL]) == 0
    assert json.loads((out / "results.json").read_text())["engine"]["device"] == "cpu"


def test_sweep_cells_default_to_cuda(fake_cuda, loaded, word_model, tmp_path):
    """A sweep's cell is `eager-eval run` with its run_args (none here): run in-process."""
    from eager_eval.frontends.cli.sweep import parse_sweep_config, run_command_line, run_sweep

    def in_process(model, data, config, output_dir, resume=True, *, limit=None,
                   settings=(), run_args=None, env=None):
        args = run_command_line(model, data, config, Path(output_dir), resume=resume,
                                limit=limit, settings=settings, run_args=run_args)
        assert "--device" not in args
        assert cli.main(args + ["--no-progress"]) == 0

    sweep = parse_sweep_config({
        "models": [str(word_model)], "tasks": [str(math_file(tmp_path))], "modes": ["eager_init"],
        "max_seqs": 2, "max_new_tokens": 6, "entropy_k": 5, "percentile": None,
        "output": str(tmp_path / "sweep"), "report": False})
    outcome = run_sweep(sweep, runner=in_process)
    assert outcome.failed == [] and len(outcome.cells) == 1
    results = json.loads((outcome.cells[0].cell.output_dir / "results.json").read_text())
    assert results["engine"]["device"] == "cuda:0"
    assert [w.moved_to for w in loaded] == [[CUDA0]]


@pytest.mark.parametrize("argv, extra, model_args, expected", [
    (["lm_eval"], {"device": "cuda:0"}, {}, CUDA0),  # lm-eval's own default: --device absent
    (["lm_eval"], {}, {}, CUDA0),
    (["lm_eval"], {"device": "cuda:0"}, {"device": "auto"}, CUDA0),
    (["lm_eval", "--device", "cpu"], {"device": "cpu"}, {}, torch.device("cpu")),
    (["lm_eval"], {"device": "cuda:0"}, {"device": "cpu"}, torch.device("cpu")),
])
def test_lm_eval_eager_hf_defaults_to_cuda_and_records_it(fake_cuda, loaded, word_model,
                                                          monkeypatch, argv, extra, model_args,
                                                          expected):
    from eager_eval.frontends.lm_eval.models import EagerHFLM

    monkeypatch.setattr(sys, "argv", argv)
    lm = EagerHFLM.create_from_arg_obj({"pretrained": str(word_model), "entropy_k": 5,
                                        **model_args}, {**extra, "batch_size": "1"})
    assert [w.moved_to for w in loaded] == [[expected]]
    assert lm.device == expected
    assert lm.get_model_info()["eager_eval"]["engine"]["device"] == str(expected)


def test_inspect_provider_defaults_to_cuda_and_logs_it(fake_cuda, loaded, word_model, tmp_path):
    """`inspect eval --model eager/<dir>` without -M device: the provider, then one real eval
    (in-process) whose log keeps the engine line."""
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.model import get_model
    from inspect_ai.solver import generate

    model = get_model(f"eager/{word_model}", max_seqs=2, entropy_k=5, theta=1.0,
                      percentile=None, seed=1, batch_window=0.01)
    assert model.api.engine_options.device == "auto"
    task = Task(dataset=MemoryDataset([Sample(input="what is 3 + 4", target="7")]),
                solver=generate())
    (log,) = inspect_eval(task, model=model, log_dir=str(tmp_path), display="none", max_tokens=6)
    assert log.status == "success", log.error
    assert [w.moved_to for w in loaded] == [[CUDA0]]
    events = [e.data["engine"] for s in log.samples for e in s.events
              if e.event == "info" and e.source == "eager-eval"]
    assert [(e["device"], e["dtype"]) for e in events] == [("cuda:0", "bfloat16")]
    asyncio.run(model.api.aclose())


# --- this machine: what ran is recorded, not "auto" --------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_auto_records_the_cpu(word_model, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", "--model", str(word_model), "--data", str(math_file(tmp_path)),
                     "--output", str(out), *SMALL]) == 0
    engine = json.loads((out / "results.json").read_text())["engine"]
    assert (engine["device"], engine["dtype"]) == ("cpu", "float32")
