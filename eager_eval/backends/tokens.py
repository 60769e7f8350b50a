"""Which token ids end a sequence: one rule for every backend, so all stop on the same tokens."""

from __future__ import annotations

from typing import Any

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "<|end|>")
"""Chat end-of-turn tokens: an instruct model ends its answer with one of these, which some
configs do not list as EOS (SmolLM2's GGUF: `<|im_end|>`)."""


def end_token_ids(tokenizer: Any, *generation_eos: int | list[int] | None) -> frozenset[int]:
    """EOS ids of the generation config(s) and the tokenizer, plus a chat end-of-turn token."""
    ids: set[int] = set()
    for eos in (*generation_eos, getattr(tokenizer, "eos_token_id", None)):
        ids.update([eos] if isinstance(eos, int) else (eos or []))
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
    return frozenset(ids)
