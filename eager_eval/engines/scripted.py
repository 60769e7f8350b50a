"""The `scripted` engine: distributions from a Python function, a character tokenizer.

The tests' model, shipped like Inspect's mockllm: it exercises every front end and the whole
pipeline through the production seams (`ScriptedEngine` is an `Engine`, registered as
`scripted`; its `ScriptedBackend` is a `Backend`), with the entropies and tokens chosen by the
test. The backend can also behave like an asynchronous engine (sequences that start late,
several tokens per step, shuffled reports, a child's own token arriving later) to check that
the tree never depends on scheduling.

Prompts are encoded by `CharTokenizer` (a character is its code point); generated tokens
decode through a vocabulary (default: token t is the text " t", EOS 0 is empty). The
registry's `scripted` engine takes a script name as its model: `mixed` (the default: prompts
ending in an even character are calm, the others branch often) or `hashed`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from eager_eval.core.backend import Fork, NewTree, TokenStep
from eager_eval.core.seeds import unit_uniform

Distribution = Sequence[tuple[int, float]]
"""(token id, log-probability) pairs, most probable first: the top-K of one position."""

Script = Callable[[tuple[int, ...], tuple[int, ...]], Distribution]
"""(prompt tokens, generated tokens so far) -> the distribution of the next position."""


def sample_from(dist: Distribution, seed: int, position: int, greedy: bool) -> int:
    """Rank 1 when greedy; else inverse-CDF over the renormalised top-K, keyed by
    (seed, position) so a restarted sequence draws the same token again."""
    if greedy:
        return dist[0][0]
    weights = [math.exp(lp) for _, lp in dist]
    u = unit_uniform(seed, position) * sum(weights)
    acc = 0.0
    for (token, _), w in zip(dist, weights):
        acc += w
        if u < acc:
            return token
    return dist[-1][0]


class _Pieces(dict):
    """Token id -> the bytes decode() writes for it (decode is a plain concatenation)."""

    def __init__(self, vocab: Mapping[int, str] | None) -> None:
        super().__init__()
        self.vocab = vocab or {}

    def __missing__(self, token: int) -> bytes:
        piece = self[token] = self.vocab.get(token, f"<{token}>").encode()
        return piece


@dataclass
class _Live:
    prompt: tuple[int, ...]
    seed: int
    tokens: list[int]
    delay: int = 0


@dataclass
class ScriptedBackend:
    script: Script
    eos_token_ids: frozenset[int] = frozenset({0})
    vocab: Mapping[int, str] | None = None
    """Token id -> text for decode(); default '<id>'."""
    greedy: bool = True
    start_delay: Callable[[int], int] | None = None
    """Steps a new sequence (by backend id) waits before its first token: engine lag."""
    tokens_per_step: Callable[[int, int], int] | None = None
    """(seq id, step number) -> tokens reported in that step (vLLM stream deltas)."""
    shuffle_seed: int | None = None
    """Shuffle the report order of each step."""
    defer_child_token: bool = False
    """With child_token None, report the child's own token later through step()."""
    forks: list[Fork] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    steps_taken: int = 0

    late_forks = True
    """A fork may name a position the parent already ran past (it re-reports after it)."""

    def __post_init__(self) -> None:
        self.eos_token_ids = frozenset(self.eos_token_ids)
        self.token_pieces = _Pieces(self.vocab)
        self._live: dict[int, _Live] = {}
        self._tree_of: dict[int, int] = {}  # live seq id -> its tree id
        self._rng = random.Random(self.shuffle_seed)

    def decode(self, token_ids: Sequence[int]) -> str:
        if self.vocab is None:
            return "".join(f"<{t}>" for t in token_ids)
        return "".join(self.vocab.get(t, f"<{t}>") for t in token_ids)

    def add(self, trees: Sequence[NewTree]) -> None:
        open_trees = set(self._tree_of.values())
        for tree in trees:
            if tree.tree_id in open_trees:
                raise ValueError(f"tree id {tree.tree_id} is already in use")
        for tree in trees:
            for root in tree.roots:
                self._live[root.seq_id] = _Live(tree.prompt, root.seed, [], self._delay(root.seq_id))
                self._tree_of[root.seq_id] = tree.tree_id

    def _delay(self, seq_id: int) -> int:
        return self.start_delay(seq_id) if self.start_delay else 0

    def _next(self, live: _Live) -> tuple[int, Distribution]:
        position = len(live.tokens)
        dist = self.script(live.prompt, tuple(live.tokens))
        token = sample_from(dist, live.seed, position, self.greedy)
        live.tokens.append(token)
        return token, dist

    def step(self) -> list[TokenStep]:
        self.steps_taken += 1
        out: list[TokenStep] = []
        for seq_id, live in list(self._live.items()):
            if live.delay > 0:
                live.delay -= 1
                continue
            n = self.tokens_per_step(seq_id, self.steps_taken) if self.tokens_per_step else 1
            for _ in range(n):
                position = len(live.tokens)
                token, dist = self._next(live)
                out.append(TokenStep(seq_id, position, token, tuple(t for t, _ in dist),
                                     tuple(lp for _, lp in dist)))
        if self.shuffle_seed is not None:
            self._rng.shuffle(out)
        return out

    def fork(self, fork: Fork) -> int | None:
        self.forks.append(fork)
        parent = self._live[fork.parent]
        t = fork.position
        if parent.tokens[t] != fork.parent_token:
            parent.tokens[t:] = [fork.parent_token]  # restart: later tokens were stale
        prefix = parent.tokens[:t]
        child = _Live(parent.prompt, fork.child_seed, list(prefix), self._delay(fork.child))
        self._live[fork.child] = child
        self._tree_of[fork.child] = self._tree_of[fork.parent]
        if fork.child_token is not None:
            child.tokens.append(fork.child_token)
            return fork.child_token
        if self.defer_child_token:
            return None  # sampled in a later step(), like an engine that resubmits the prefix
        token, _ = self._next(child)
        return token

    def finish(self, seq_id: int) -> None:
        self.finished.append(seq_id)
        self._live.pop(seq_id, None)
        self._tree_of.pop(seq_id, None)

    def has_unfinished(self) -> bool:
        return bool(self._live)


# ----------------------------------------------------------------------------------------------
# Scripts: distributions as functions of (prompt, generated tokens)
# ----------------------------------------------------------------------------------------------

EOS = 0
"""The scripted engines' end-of-sequence token."""

VOCAB: dict[int, str] = {EOS: "", **{t: f" {t}" for t in range(1, 100)}}
"""Token t decodes to " t" (EOS to nothing): generated text shows its token ids."""


def flat(tokens: list[int]) -> Distribution:
    """Equal probability over `tokens`: entropy ln(len(tokens)); rank order as given."""
    lp = -math.log(len(tokens))
    return [(t, lp) for t in tokens]


def peaked(token: int, other: int = 99) -> Distribution:
    """Almost certain `token`: entropy about 0.056 nats."""
    return [(token, math.log(0.99)), (other, math.log(0.01))]


def hashed_script(salt: int = 0, eos_after: int = 12, vocab: int = 30) -> Script:
    """A pseudo-random script: varied entropies at every position, EOS near the end.

    The distribution is a pure function of (prompt, generated tokens), like a model.
    """

    def script(prompt: tuple[int, ...], generated: tuple[int, ...]) -> Distribution:
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


def mixed_script(salt: int = 3) -> Script:
    """Prompts ending in an even character are calm (never branch, 6 tokens); odd ones branch
    on most positions: EAGer-init leaves budget that EAGer-adapt hands to the odd ones."""
    wild = hashed_script(salt, eos_after=10)

    def script(prompt: tuple[int, ...], generated: tuple[int, ...]) -> Distribution:
        if prompt[-1] % 2 == 0:
            return peaked(EOS) if len(generated) >= 6 else peaked(5 + len(generated) % 3)
        return wild(prompt, generated)

    return script


SCRIPTS: dict[str, Callable[[], Script]] = {"mixed": mixed_script, "hashed": hashed_script}
"""The scripts the registry's `scripted` engine knows by name (its "model")."""


# ----------------------------------------------------------------------------------------------
# The prompt layer's tokenizer, and the engine
# ----------------------------------------------------------------------------------------------


class CharTokenizer:
    """The prompt layer's tokenizer for scripted engines: a character is its code point.

    `template=True` gives it a small chat template (each message as `<role>text</role>`, then
    `<assistant>`), so a test sees whether the template was applied; `vocab` decodes the ids a
    script generates (the text around forks). A text holding "BAD" cannot be encoded.
    """

    def __init__(self, vocab: Mapping[int, str] | None = None, *, template: bool = False,
                 thinking: bool = False) -> None:
        self.vocab = dict(vocab or {})
        self.chat_template = ("<role>{{content}}</role>" + ("{{enable_thinking}}" if thinking else "")
                              if template else None)
        self.thinking = thinking
        self.name_or_path = "scripted"

    def __call__(self, text: str, *, add_special_tokens: bool = True) -> dict[str, list[int]]:
        if "BAD" in text:
            raise ValueError("this prompt cannot be encoded")
        return {"input_ids": [ord(c) for c in text]}

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], *,
                            add_generation_prompt: bool = True, tokenize: bool = False,
                            enable_thinking: bool = False, **_: object) -> Any:
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        if add_generation_prompt:
            text += "<assistant>" + ("<think>" if self.thinking and enable_thinking else "")
        return self(text, add_special_tokens=False)["input_ids"] if tokenize else text

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.vocab.get(int(t), chr(int(t))) for t in ids)


@dataclass
class ScriptedEngine:
    """An Engine whose backends are ScriptedBackends over `script`; prompts are characters.

    `backend_options` go to every ScriptedBackend (start_delay, tokens_per_step,
    shuffle_seed, defer_child_token: an engine's lag); `runs` lists each backend's trees (their
    prompts) in the order backends were made (what each budget pool spanned), `configs` the
    config each was made for."""

    script: Script
    greedy: bool = False
    """Always rank 1 (else: greedy only at temperature 0, sampled otherwise)."""
    name: str = "scripted"
    vocab: Mapping[int, str] = field(default_factory=lambda: dict(VOCAB))
    tokenizer: Any = None
    """Default: CharTokenizer(vocab)."""
    context_length: int | None = None
    vocab_size: int | None = None
    """For `verify` (entropy_k, top_k within it); None: not checked."""
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    runs: list[list[tuple[int, ...]]] = field(default_factory=list)
    configs: list[Any] = field(default_factory=list)
    """The config each backend was made for, in order (beside `runs`)."""

    def __post_init__(self) -> None:
        if self.tokenizer is None:
            self.tokenizer = CharTokenizer(self.vocab)

    def verify(self, config: Any) -> None:
        config.verify_model(vocab_size=self.vocab_size,
                            encode=lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def new_backend(self, config: Any) -> ScriptedBackend:
        self.verify(config)
        backend = ScriptedBackend(self.script, greedy=self.greedy or config.temperature == 0,
                                  vocab=self.vocab, **dict(self.backend_options))
        prompts: list[tuple[int, ...]] = []
        self.runs.append(prompts)
        self.configs.append(config)
        add = backend.add

        def add_and_note(trees: Sequence[NewTree]) -> None:
            prompts.extend(tree.prompt for tree in trees)
            add(trees)

        backend.add = add_and_note  # type: ignore[method-assign]
        return backend

    def info(self) -> dict[str, Any]:
        return {"backend": "scripted", "model": self.name}


def check_model(model: str) -> None:
    """A scripted engine's model is the name of one of its SCRIPTS."""
    if model not in SCRIPTS:
        from eager_eval.engines.models import ModelNotFoundError

        raise ModelNotFoundError(f"unknown script {model!r} for the scripted engine: use one of "
                                 f"{', '.join(SCRIPTS)}")


def load(model: str, options: Any, config: Any) -> ScriptedEngine:
    """The registry's loader for `scripted`: `model` names a script (SCRIPTS)."""
    check_model(model)
    return ScriptedEngine(SCRIPTS[model](), name=model)
