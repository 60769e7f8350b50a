"""Distributions and scripts for the ScriptedBackend, shared by the core's tests."""

from __future__ import annotations

import math

from eager_eval.engines.scripted import Distribution
from eager_eval.core.seeds import unit_uniform

EOS = 0


def flat(tokens: list[int]) -> Distribution:
    """Equal probability over `tokens`: entropy ln(len(tokens)); rank order as given."""
    lp = -math.log(len(tokens))
    return [(t, lp) for t in tokens]


def peaked(token: int, other: int = 99) -> Distribution:
    """Almost certain `token`: entropy about 0.056 nats."""
    return [(token, math.log(0.99)), (other, math.log(0.01))]


def entropy_of(dist: Distribution) -> float:
    ps = [math.exp(lp) for _, lp in dist]
    z = sum(ps)
    return -sum(p / z * math.log(p / z) for p in ps)


def hashed_script(salt: int = 0, eos_after: int = 12, vocab: int = 30):
    """A pseudo-random script: varied entropies at every position, EOS near the end.

    The distribution is a pure function of (prompt, generated tokens), like a model.
    """

    def script(prompt, generated):
        key = hash((salt, prompt, generated)) & ((1 << 62) - 1)
        n = len(generated)
        if n >= eos_after + (key % 3):
            return peaked(EOS)
        width = 2 + int(unit_uniform(key, 1) * 6)  # 2..7 tokens: entropies ln2..ln7
        start = 1 + int(unit_uniform(key, 2) * (vocab - width - 1))
        tokens = list(range(start, start + width))
        weights = [1.0 + unit_uniform(key, 10 + i) * 3 for i in range(width)]
        weights.sort(reverse=True)
        z = sum(weights)
        return [(t, math.log(w / z)) for t, w in zip(tokens, weights)]

    return script


class CharTokenizer:
    """The prompt layer's tokenizer for scripted engines: a character is its code point.

    `template=True` gives it a small chat template (each message as `<role>text</role>`, then
    `<assistant>`), so a test sees whether the template was applied; `vocab` decodes the ids a
    script generates (the text around forks). A text holding "BAD" cannot be encoded.
    """

    def __init__(self, vocab: dict[int, str] | None = None, *, template: bool = False,
                 thinking: bool = False) -> None:
        self.vocab = vocab or {}
        self.chat_template = ("<role>{{content}}</role>" + ("{{enable_thinking}}" if thinking else "")
                              if template else None)
        self.thinking = thinking

    def __call__(self, text: str, *, add_special_tokens: bool = True) -> dict[str, list[int]]:
        if "BAD" in text:
            raise ValueError("this prompt cannot be encoded")
        return {"input_ids": [ord(c) for c in text]}

    def apply_chat_template(self, messages, *, add_generation_prompt: bool = True,
                            tokenize: bool = False, enable_thinking: bool = False, **_: object):
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        if add_generation_prompt:
            text += "<assistant>" + ("<think>" if self.thinking and enable_thinking else "")
        return self(text, add_special_tokens=False)["input_ids"] if tokenize else text

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(self.vocab.get(int(t), chr(int(t))) for t in ids)
