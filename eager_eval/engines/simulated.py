"""SimulatedBackend: a zero-cost engine that writes reasoning-trace-shaped token streams.

For measuring the runner at the paper's scale (30 prompts x 32 sequences x thousands of tokens)
without a model: tokens appear instantly, so what a benchmark measures is the driver itself.
Every sequence is a pure function of (its prompt, its seed, its fork position):

- a length drawn between L/2 and L; the end is EOS, or for some sequences a stop string;
- an end-of-thinking marker written (as the tokenizer splits it) at 30-60% of the length;
- top-K distributions from precomputed shapes: a few near-flat, high-entropy ones, mostly
  before the marker and more often for "hard" prompts; peaked ones everywhere else;
- tokens from a word vocabulary, so a real tokenizer decodes them into text.

A child forked at p keeps the parent's tokens before p and writes its own stream (its own
seed) after it, with its marker after p. Like the ScriptedBackend, a top2 fork that changes the
parent's token at p makes the parent re-report its positions after p. The tokenizer is only
used to find token ids and to decode: this module imports no torch.

For a GPU's time (engines/simulated_fleet.py) each step leaves what it cost in `last_step`
(rows decoded, KV tokens read, prompt tokens prefilled), and `kv_capacity` bounds the KV cache
as vLLM's scheduler does: a tree holds its prompt once plus each sequence's own tokens (a
forked prefix is shared, as with prefix caching, and stays while a descendant reads it); when
the next step does not fit, the most recently admitted tree is preempted (its KV freed, its
sequences paused) and later re-admitted first, prefilling all it held again (vLLM's recompute
preemption, at the granularity of a whole tree). Which step a token comes out in never changes
the tokens (the runner decides on positions, not steps).
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from eager_eval.core.backend import Fork, NewTree, TokenStep
from eager_eval.engines.tokens import token_pieces
from eager_eval.core.entropy import topk_confidence, topk_entropy
from eager_eval.core.seeds import hash64

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class TraceProfile:
    """The shape of the simulated traces."""

    length: int = 2048
    """L: sequences end between L/2 and L tokens (run with max_new_tokens >= L)."""
    topk: int = 20
    think_end: str = "</think>"
    stop: str = "Question:"
    stop_share: float = 0.3
    """Share of sequences that end with the stop string (after the marker) instead of EOS."""
    think_at: tuple[float, float] = (0.3, 0.6)
    """The marker is written at this share of a sequence's length."""
    high_entropy_rate: tuple[float, ...] = (0.02, 0.006, 0.0015)
    """Share of high-entropy positions before the marker, per difficulty (hard, medium, easy);
    a prompt's difficulty is its index modulo their number."""
    high_entropy_rate_after: float = 0.0005
    """The same after the marker (the answer part: rarely uncertain)."""


@dataclass
class _Seq:
    seed: int
    prompt: tuple[int, ...]
    difficulty: int
    fork_position: int
    max_new_tokens: int
    tokens: list[int] = field(default_factory=list)
    length: int = 0
    think_at: int = 0
    stop_end: bool = False
    wants_topk: bool = True
    tree: "_Tree | None" = None
    children: list["_Seq"] = field(default_factory=list)
    live: bool = True


@dataclass
class _Tree:
    """A tree as the KV cache sees it (kv_capacity): its sequences and whether it runs."""

    order: int
    prompt_len: int
    seqs: list[_Seq] = field(default_factory=list)
    running: bool = False
    dead_kv: int = 0
    """KV its finished sequences still hold (prefixes that live descendants read)."""

    def kv(self) -> int:
        return self.prompt_len + self.dead_kv + sum(
            len(s.tokens) - s.fork_position for s in self.seqs if s.live)

    def rows(self) -> int:
        return sum(1 for s in self.seqs if s.live)


@dataclass
class StepLoad:
    """What one engine step did: the inputs of a step-cost model."""

    rows: int = 0
    """Tokens decoded (one per running sequence)."""
    context: int = 0
    """KV tokens read by attention (each decoded row reads its prompt and tokens so far)."""
    prefill: int = 0
    """Tokens prefilled (new trees' prompts; what preempted trees held, recomputed)."""


class SimulatedBackend:
    """`Backend` over a synthetic reasoning-trace generator (see the module docstring).

    `tokenizer`: anything with `decode(ids, skip_special_tokens=True)`, `eos_token_id`,
    `encode(text, add_special_tokens=False)` and `convert_ids_to_tokens` (a transformers
    tokenizer). `difficulty` maps a prompt (token tuple) to its difficulty index; by default
    the prompt's last token.
    """

    def __init__(self, tokenizer: Any, profile: TraceProfile | None = None, *, shapes: int = 256,
                 vocab_seed: int = 0, logprobs: bool = True,
                 kv_capacity: int | None = None, confidence_k: int = 20) -> None:
        self.tokenizer = tokenizer
        self.profile = profile or TraceProfile()
        self.logprobs = logprobs
        self.kv_capacity = kv_capacity
        """KV-cache tokens (None: unbounded); see the module docstring."""
        self.kv_used = 0
        self.preemptions = 0
        self.last_step = StepLoad()
        self._prefill = 0
        self._trees: list[_Tree] = []
        """Trees in the KV cache's books (kv_capacity), in arrival order, until all ended."""
        self._waiting: list[_Tree] = []
        self._added = 0
        """False: report no top-K (a run that never branches), as the real backends do."""
        self.confidence_k = confidence_k
        """k of the token confidence each step reports (0: none), as the real backends do."""
        self.eos_token_ids = frozenset({tokenizer.eos_token_id})
        self.token_pieces = token_pieces(tokenizer)
        self.late_forks = True
        self.steps_taken = 0
        self._marker = tuple(tokenizer.encode(self.profile.think_end, add_special_tokens=False))
        self._stop = tuple(tokenizer.encode(" " + self.profile.stop, add_special_tokens=False))
        rng = random.Random(vocab_seed)
        words = _word_ids(tokenizer)
        k = self.profile.topk
        self._id_rows = [tuple(rng.sample(words, k)) for _ in range(4096)]
        self._low = [_shape(rng, k, confidence_k, high=False) for _ in range(shapes)]
        self._high = [_shape(rng, k, confidence_k, high=True) for _ in range(max(8, shapes // 8))]
        self._certain = min(self._low, key=lambda shape: shape[2])
        self._live: dict[int, _Seq] = {}

    # ---- protocol ----------------------------------------------------------------------------

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def add(self, trees: Sequence[NewTree]) -> None:
        for tree in trees:
            if self.kv_capacity is None:  # nothing to account: every tree runs
                kv_tree = _UNBOUNDED
                self._prefill += len(tree.prompt)
            else:
                self._added += 1
                kv_tree = _Tree(self._added, len(tree.prompt))
                self._trees.append(kv_tree)
                self._waiting.append(kv_tree)
            for root in tree.roots:
                seq = self._new_seq(root.seed, tree.prompt, 0, tree.max_new_tokens, [])
                seq.tree = kv_tree
                if self.kv_capacity is not None:
                    kv_tree.seqs.append(seq)
                self._live[root.seq_id] = seq

    def step(self) -> list[TokenStep]:
        self.steps_taken += 1
        if self.kv_capacity is not None:
            self._schedule()
        out = []
        context = 0
        for seq_id, seq in self._live.items():
            position = len(seq.tokens)
            if position >= seq.max_new_tokens or (position >= seq.length and not seq.stop_end):
                continue  # an engine stops at EOS itself; stop strings are the runner's
            if not seq.tree.running:
                continue  # preempted, or waiting for room in the KV cache
            token, ids, logprobs, entropy, confidence = self._next(seq, position)
            seq.tokens.append(token)
            context += position + len(seq.prompt)
            if seq.wants_topk:
                out.append(TokenStep(seq_id, position, token, ids, logprobs, entropy, confidence))
            else:
                out.append(TokenStep(seq_id, position, token, (), (), None, confidence))
        self.kv_used += len(out) if self.kv_capacity is not None else 0
        self.last_step = StepLoad(len(out), context, self._prefill)
        self._prefill = 0
        return out

    # ---- the KV cache (kv_capacity) ----------------------------------------------------------

    def _schedule(self) -> None:
        """Preempt the latest running trees while the next step does not fit; then admit
        waiting trees (preempted ones first) while they fit."""
        cap = self.kv_capacity
        running = [t for t in self._trees if t.running]
        rows = sum(t.rows() for t in running)
        while len(running) > 1 and self.kv_used + rows > cap:
            victim = running.pop()  # the latest admitted (trees are in arrival order)
            victim.running = False
            self.kv_used -= victim.kv()
            rows -= victim.rows()
            bisect.insort(self._waiting, victim, key=lambda t: t.order)  # first come, first back
            self.preemptions += 1
        while self._waiting:
            tree = self._waiting[0]
            size, need = tree.kv(), tree.rows()
            if running and self.kv_used + size + need > cap:
                break
            self._waiting.pop(0)
            tree.running = True
            running.append(tree)
            self.kv_used += size
            rows += need
            self._prefill += size

    def _free(self, seq: _Seq) -> None:
        """`seq` finished: its own tokens leave the cache, but a prefix a live descendant
        reads stays."""
        tree = seq.tree
        if tree is None or not seq.live:
            return
        seq.live = False
        if self.kv_capacity is None:
            return
        before = tree.dead_kv + (len(seq.tokens) - seq.fork_position)
        tree.dead_kv = sum(_retained(s) for s in tree.seqs if not s.live)
        if tree.running:
            self.kv_used += tree.dead_kv - before
        if not any(s.live for s in tree.seqs):  # the tree ended: out of the books
            if tree.running:
                self.kv_used -= tree.prompt_len + tree.dead_kv
            tree.running = False
            self._trees.remove(tree)
            if tree in self._waiting:
                self._waiting.remove(tree)

    def fork(self, fork: Fork) -> int | None:
        parent = self._live[fork.parent]
        t = fork.position
        if parent.tokens[t] != fork.parent_token:
            dropped = len(parent.tokens) - t - 1
            del parent.tokens[t:]  # later tokens were written after the replaced one: stale
            parent.tokens.append(fork.parent_token)
            if parent.tree is not None and parent.tree.running and self.kv_capacity is not None:
                self.kv_used -= dropped
        child = self._new_seq(fork.child_seed, parent.prompt, t, parent.max_new_tokens,
                              parent.tokens[:t])
        child.tree = parent.tree
        if self.kv_capacity is not None:
            parent.children.append(child)
            parent.tree.seqs.append(child)
        self._live[fork.child] = child
        if fork.child_token is not None:
            token = fork.child_token
        else:
            token = self._next(child, t)[0]
        child.tokens.append(token)
        if parent.tree is not None and parent.tree.running and self.kv_capacity is not None:
            self.kv_used += 1
        return token

    def finish(self, seq_id: int) -> None:
        seq = self._live.pop(seq_id, None)
        if seq is not None:
            self._free(seq)

    def has_unfinished(self) -> bool:
        return bool(self._live)

    def stop_topk(self, seq_ids: Sequence[int]) -> None:
        for seq_id in seq_ids:
            if seq_id in self._live:
                self._live[seq_id].wants_topk = False

    # ---- the synthetic stream ----------------------------------------------------------------

    def _new_seq(self, seed: int, prompt: tuple[int, ...], fork_position: int,
                 max_new_tokens: int, tokens: list[int]) -> _Seq:
        p = self.profile
        h = hash64(seed & _MASK64)
        length = p.length // 2 + h % (p.length - p.length // 2 + 1)
        share = p.think_at[0] + (p.think_at[1] - p.think_at[0]) * ((h >> 20) % 1000) / 1000
        think_at = int(length * share)
        if think_at <= fork_position:  # a child writes its own marker, after its fork
            think_at = fork_position + 1 + (h >> 40) % 64
        length = max(length, think_at + len(self._marker) + len(self._stop) + 2)
        difficulty = prompt[-1] % len(p.high_entropy_rate)
        seq = _Seq(seed, prompt, difficulty, fork_position, max_new_tokens, tokens, length,
                   think_at, stop_end=((h >> 50) % 1000) < p.stop_share * 1000)
        return seq

    def _next(self, seq: _Seq, t: int) -> tuple[int, tuple, tuple, float | None, float | None]:
        """(token, top-K ids, top-K logprobs, entropy, confidence) of `seq` at position t."""
        h = hash64((seq.seed ^ (t * 0x9E3779B97F4A7C15)) & _MASK64)
        p = self.profile
        before = t < seq.think_at
        rate = p.high_entropy_rate[seq.difficulty] if before else p.high_entropy_rate_after
        shapes = self._high if (h & 0xFFFFF) < rate * 0x100000 else self._low
        logprobs, cdf, entropy, confidence = shapes[(h >> 20) % len(shapes)]
        ids = self._id_rows[(h >> 28) % len(self._id_rows)]
        rank = bisect.bisect_right(cdf, ((h >> 40) & 0xFFFFFF) / 0x1000000)
        token = ids[min(rank, len(ids) - 1)]
        forced = None  # the marker and the end are written for sure: peaked, never a fork
        m = t - seq.think_at
        if 0 <= m < len(self._marker):
            forced = self._marker[m]
        end = seq.length - 1
        if seq.stop_end and end - len(self._stop) < t <= end:
            forced = self._stop[t - (end - len(self._stop) + 1)]
        elif t == end:
            forced = next(iter(self.eos_token_ids))
        if forced is not None:
            token, ids = forced, (forced,) + ids[1:]
            logprobs, _, entropy, confidence = self._certain
        if not self.logprobs:
            return token, (), (), None, confidence
        return token, ids, logprobs, entropy, confidence


_UNBOUNDED = _Tree(0, 0, running=True)
"""The one tree every sequence belongs to when the KV cache is unbounded (no books kept)."""


def _needed(seq: _Seq) -> bool:
    """A live sequence, or one whose prefix a live descendant reads."""
    return seq.live or any(_needed(c) for c in seq.children)


def _retained(seq: _Seq) -> int:
    """KV a finished sequence still holds: its own tokens up to the last fork position a
    needed child reads."""
    reads = [c.fork_position for c in seq.children if _needed(c)]
    return max(0, max(reads) - seq.fork_position) if reads else 0


def _shape(rng: random.Random, k: int, confidence_k: int, *,
           high: bool) -> tuple[tuple[float, ...], list[float], float, float | None]:
    """(top-K logprobs, cumulative probabilities, entropy in nats, token confidence or None)
    of one distribution shape."""
    scale = rng.uniform(0.02, 0.25) if high else rng.uniform(1.2, 6.0)
    logits = sorted((-scale * i * rng.uniform(0.8, 1.2) for i in range(k)), reverse=True)
    top = max(logits)
    z = sum(math.exp(x - top) for x in logits)
    logprobs = tuple(x - top - math.log(z) for x in logits)
    probs = [math.exp(lp) for lp in logprobs]
    cdf, acc = [], 0.0
    for q in probs:
        acc += q
        cdf.append(acc)
    confidence = topk_confidence(logprobs, confidence_k) if confidence_k else None
    return logprobs, cdf, topk_entropy(logprobs), confidence


def _word_ids(tokenizer: Any) -> list[int]:
    """Ids of plain lower-case words with a leading space: decodes into readable prose."""
    vocab = tokenizer.get_vocab()
    words = [i for tok, i in vocab.items()
             if tok.startswith("Ġ") and tok[1:].isalpha() and tok[1:].islower() and len(tok) > 3]
    words.sort()
    if len(words) < 100:
        raise ValueError(f"the tokenizer has only {len(words)} plain word tokens; need >= 100")
    return words
