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


def _byte_of_char() -> dict[str, int]:
    """Byte-level BPE's alphabet: every byte is written as one printable character (printable
    Latin-1 bytes as themselves, the others shifted past 255), so a token string maps back to
    its bytes character by character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, shift = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + shift)] = b
            shift += 1
    return table


def token_pieces(tokenizer: Any, *, checks: int = 64) -> list[bytes] | None:
    """Each token's bytes, when `tokenizer.decode(ids, skip_special_tokens=True)` is exactly
    the lossy UTF-8 decoding of its tokens' bytes laid end to end; else None.

    That holds for byte-level BPE tokenizers (a `ByteLevel` decoder, no clean-up of spaces):
    GPT-2, Llama 3, Qwen, SmolLM, gpt-oss. Special tokens decode to nothing. The rule is then
    checked on `checks` random token lists (the runner's end-of-thinking and stop-string tests
    rely on it, text_watch.py); any disagreement gives None and the runner decodes instead.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(getattr(backend, "decoder", None)).__name__ != "ByteLevel":
        return None
    if getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return None
    special = set(getattr(tokenizer, "all_special_ids", []))
    special.update(i for i, added in backend.get_added_tokens_decoder().items() if added.special)
    byte_of = _byte_of_char()
    pieces = []
    for i in range(backend.get_vocab_size(with_added_tokens=True)):
        token = backend.id_to_token(i)
        if token is None or i in special:
            pieces.append(b"")
        elif all(c in byte_of for c in token):
            pieces.append(bytes(byte_of[c] for c in token))
        else:  # an added token outside the byte alphabet: the decoder keeps its text
            pieces.append(token.encode())
    return pieces if _concatenates(tokenizer, pieces, checks) else None


def _concatenates(tokenizer: Any, pieces: list[bytes], checks: int) -> bool:
    import random

    rng = random.Random(0)
    special = [i for i, p in enumerate(pieces) if not p][:16]
    for n in range(checks):
        ids = [rng.randrange(len(pieces)) for _ in range(1 + n % 24)]
        if special and n % 4 == 0:
            ids.insert(rng.randrange(len(ids) + 1), rng.choice(special))
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if _squeeze(text) != _squeeze(b"".join(pieces[i] for i in ids).decode("utf-8", "replace")):
            return False
    return True


def _squeeze(text: str) -> str:
    """Runs of U+FFFD as one: decoders differ in how many an invalid byte run becomes, and the
    text rules only look for valid strings."""
    import re

    return re.sub("\ufffd+", "\ufffd", text)
