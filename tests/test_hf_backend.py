"""HFBackend against plain transformers on tiny random-weight models (no download).

The oracle for every reported distribution is one unbatched, unpadded forward of the same
token prefix: forks, drops, admissions and left padding must not change what a row sees.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from eager_eval.core.backend import Backend, Fork, NewTree, Root
from eager_eval.engines.hf import HFBackend, _row_key, counter_uniforms
from support import one_torch_thread  # noqa: E402,F401 (fixture)

VOCAB = 96
ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakeTokenizer:
    """What the backend reads from a tokenizer: decode, eos id, vocab (for <|im_end|>)."""

    eos_token_id = 3

    def get_vocab(self) -> dict[str, int]:
        return {"<|im_end|>": 5, "a": 7}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return " ".join(f"t{i}" for i in ids if not (skip_special_tokens and i in (3, 5)))


def tiny_model(arch: str = "llama"):
    torch.manual_seed(0)
    common = {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": 0,
    }
    if arch == "llama":
        config = transformers.LlamaConfig(**common)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Qwen3Config(**common, head_dim=8)
        model = transformers.Qwen3ForCausalLM(config)
    with torch.no_grad():  # larger weights: peakier, more varied distributions than init gives
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10.0)
    return model.eval()


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def model(request):
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


PROMPTS = [
    (1, 9, 14, 22, 31, 8, 40),
    (2, 17),
    (5, 60, 61, 62, 11),
    (4, 4, 90, 33, 21, 70, 12, 9, 9, 1),
]


def roots(prompts, seeds=None, max_new_tokens=50):
    seeds = seeds or [100 + i for i in range(len(prompts))]
    return [
        NewTree.single(i, tuple(p), s, max_new_tokens) for i, (p, s) in enumerate(zip(prompts, seeds))
    ]


def tree_roots(trees, max_new_tokens=50):
    """[(prompt, roots, cap)] -> trees 0, 1, ..., their roots' seq ids counting from 0."""
    out, first = [], 0
    for tree, (prompt, n, cap) in enumerate(trees):
        out.append(NewTree(tree, tuple(prompt), tuple(Root(first + i, 100 + first + i)
                                                      for i in range(n)), max_new_tokens, cap))
        first += n
    return out


def ids(steps):
    return [s.seq_id for s in steps]


def reference_logprobs(model, prefix) -> torch.Tensor:
    """log_softmax of one plain batch-1 forward of `prefix`: the oracle."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prefix])).logits[0, -1]
    return logits.float().log_softmax(-1)


def run_tokens(backend, trees, n_steps):
    """Tokens per seq_id after `n_steps` steps, no forks."""
    backend.add(trees)
    tokens = {r.seq_id: [] for t in trees for r in t.roots}
    for _ in range(n_steps):
        for st in backend.step():
            tokens[st.seq_id].append(st.token)
    return tokens


def test_is_a_backend(llama):
    backend = HFBackend(llama, FakeTokenizer())
    assert isinstance(backend, Backend)
    assert backend.eos_token_ids == frozenset({3, 5})
    assert backend.decode([7, 3, 8, 5]) == "t7 t8"


LONG_PROMPT = (3, 1, 4, 1, 5, 9, 2, 6, 53, 58, 9, 79, 32, 38, 46, 26)
LATE_ROOTS = {  # step -> root added then: admission mid-wave merges caches of other widths
    2: NewTree.single(100, LONG_PROMPT, 1234, 50),  # longer than the running batch
    6: NewTree.single(101, (27, 18, 28), 4321, 50),  # shorter than the running batch
}


@pytest.mark.parametrize("policy", ["top2", "sample"])
def test_forked_rows_see_the_same_logits_as_a_fresh_forward(model, policy):
    """Every row at every step = an unbatched recompute of prompt + that row's own tokens."""
    backend = HFBackend(model, FakeTokenizer(), entropy_k=VOCAB, temperature=1.0)
    first = [*PROMPTS[:3], PROMPTS[0]]  # lengths 7, 2, 5: left padding; a repeat: prefilled once
    backend.add(roots(first))
    prefix = {i: list(p) for i, p in enumerate(first)}
    prompt_len = {i: len(p) for i, p in enumerate(first)}
    next_id, checked, forks_done, parents_finished = 200, 0, 0, 0
    for t in range(14):
        steps = backend.step()
        for st in steps:
            assert st.position == len(prefix[st.seq_id]) - prompt_len[st.seq_id]
            ref = reference_logprobs(model, prefix[st.seq_id])
            got = torch.full((VOCAB,), float("nan"))
            got[list(st.topk_ids)] = torch.tensor(st.topk_logprobs)
            assert torch.allclose(got, ref, atol=ATOL), (t, st.seq_id, (got - ref).abs().max())
            assert list(st.topk_logprobs) == sorted(st.topk_logprobs, reverse=True)
            checked += 1
        for st in steps:  # record tokens, then fork some rows at this position
            prefix[st.seq_id].append(st.token)
        for st in steps:
            if (t in (1, 4, 5, 9) and st.seq_id % 3 == t % 3) and len(steps) < 12:
                child = next_id
                next_id += 1
                if policy == "top2":
                    parent_token, child_token = st.topk_ids[0], st.topk_ids[1]
                else:
                    parent_token, child_token = st.token, None
                got = backend.fork(
                    Fork(st.seq_id, child, st.position, parent_token, child_token, 7 * child)
                )
                if child_token is not None:
                    assert got == child_token
                prefix[st.seq_id][-1] = parent_token
                prefix[child] = prefix[st.seq_id][:-1] + [got]
                prompt_len[child] = prompt_len[st.seq_id]
                forks_done += 1
                if t == 5 and forks_done % 2:  # the parent ends at once (e.g. its new token is
                    backend.finish(st.seq_id)  # EOS): the child still reads the parent's cache row
                    parents_finished += 1
        if t == 7:  # drop a root and a child
            live = sorted({st.seq_id for st in steps})
            backend.finish(live[0])
            backend.finish(live[-1])
        if t in LATE_ROOTS:
            late = LATE_ROOTS[t]
            backend.add([late])
            seq_id = late.roots[0].seq_id
            prefix[seq_id], prompt_len[seq_id] = list(late.prompt), len(late.prompt)
    assert forks_done >= 4 and parents_finished >= 1 and checked > 60
    assert len(prefix[100]) > 16 + 5 and len(prefix[101]) > 3 + 5  # both late roots ran


def test_positions_count_from_zero_and_children_inherit_the_fork_position(llama):
    backend = HFBackend(llama, FakeTokenizer(), temperature=1.0)
    backend.add(roots(PROMPTS[:2]))
    first = backend.step()
    assert [(s.seq_id, s.position) for s in first] == [(0, 0), (1, 0)]
    backend.step()
    child = backend.fork(Fork(0, 10, 1, 5, None, 1234))
    assert isinstance(child, int)
    third = backend.step()
    assert [(s.seq_id, s.position) for s in third] == [(0, 2), (1, 2), (10, 2)]


def test_greedy_equals_generate(model):
    prompts = PROMPTS
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    n = 20
    expected = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, pad_token_id=0
    )[:, width:].tolist()
    backend = HFBackend(model, FakeTokenizer(), temperature=0.0)
    got = run_tokens(backend, roots(prompts), n)
    assert [got[i] for i in range(len(prompts))] == expected


def test_same_seeds_give_the_same_tokens(llama):
    a = run_tokens(HFBackend(llama, FakeTokenizer(), temperature=1.0), roots(PROMPTS), 25)
    b = run_tokens(HFBackend(llama, FakeTokenizer(), temperature=1.0), roots(PROMPTS), 25)
    assert a == b
    other_seeds = roots(PROMPTS, [1, 2, 3, 4])
    assert run_tokens(HFBackend(llama, FakeTokenizer(), temperature=1.0), other_seeds, 25) != a


def test_tokens_do_not_depend_on_companion_rows(llama):
    """Sequence 0 (prompt 0, seed 100) alone, and batched with different companions."""
    def tokens_of_sequence_0(prompts, seeds):
        backend = HFBackend(llama, FakeTokenizer(), temperature=1.0)
        return run_tokens(backend, roots(prompts, seeds), 30)[0]

    alone = tokens_of_sequence_0(PROMPTS[:1], [100])
    assert tokens_of_sequence_0(PROMPTS, [100, 5, 6, 7]) == alone
    assert tokens_of_sequence_0([PROMPTS[0], PROMPTS[3], PROMPTS[2]], [100, 9, 8]) == alone


def test_top_k_and_top_p_restrict_the_sample(llama):
    backend = HFBackend(llama, FakeTokenizer(), entropy_k=VOCAB, temperature=1.0, top_k=3, top_p=0.9)
    backend.add(roots(PROMPTS))
    for _ in range(10):
        for st in backend.step():  # raw logprobs, sorted: the sampled token is among the top 3
            assert st.token in st.topk_ids[:3]
    nucleus = HFBackend(llama, FakeTokenizer(), entropy_k=VOCAB, temperature=1.0, top_p=0.3)
    nucleus.add(roots(PROMPTS))
    for _ in range(10):
        for st in nucleus.step():  # allowed: tokens whose more probable predecessors hold < 0.3
            probs = torch.tensor(st.topk_logprobs).exp()
            mass_before = (probs.cumsum(0) - probs).tolist()
            allowed = [tok for tok, m in zip(st.topk_ids, mass_before) if m < 0.3 + 1e-6]
            assert st.token in allowed
    processed = HFBackend(
        llama, FakeTokenizer(), entropy_k=5, temperature=1.0, top_k=2, entropy_source="processed"
    )
    processed.add(roots(PROMPTS))
    for st in processed.step():
        assert st.topk_logprobs[2:] == (float("-inf"),) * 3  # masked by top_k=2
        assert abs(sum(torch.tensor(st.topk_logprobs[:2]).exp().tolist()) - 1) < 1e-5


def test_finish_drops_rows_and_queued_roots_are_admitted_under_max_rows(llama):
    backend = HFBackend(llama, FakeTokenizer(), temperature=1.0, max_rows=3)
    prompts = [PROMPTS[i % 4] for i in range(8)]
    backend.add(roots(prompts))
    backend.finish(7)  # a queued root: never admitted
    reported, lengths = set(), {}
    while backend.has_unfinished():
        steps = backend.step()
        assert len(steps) <= 3
        assert len(backend._rows) == len(steps)
        for st in steps:
            reported.add(st.seq_id)
            lengths[st.seq_id] = st.position + 1
            if st.position + 1 == 4 + st.seq_id % 3:  # uneven lengths: admission mid-wave
                backend.finish(st.seq_id)
    assert reported == set(range(7))
    assert lengths == {i: 4 + i % 3 for i in range(7)}
    assert backend._cache.bytes() == 0 and backend._logits is None  # freed with the last row
    assert backend.step() == []


def test_forks_are_never_refused_and_drops_free_cache_slots(llama):
    """Forks past a tree's cap (the runner never asks for one) are still applied; that tree
    then reserves its live rows, so the next root waits until they finish."""
    backend = HFBackend(llama, FakeTokenizer(), temperature=1.0, max_rows=2)
    backend.add(roots(PROMPTS[:3]))
    steps = backend.step()
    assert [s.seq_id for s in steps] == [0, 1]
    for child in (10, 11):
        backend.fork(Fork(0, child, 0, steps[0].token, None, child))
    steps = backend.step()
    assert [s.seq_id for s in steps] == [0, 1, 10, 11]  # past max_rows: root 2 waits
    assert backend._cache.used == 4
    for seq_id in (0, 10, 11):
        backend.finish(seq_id)
    steps = backend.step()
    assert [s.seq_id for s in steps] == [1, 2]  # root 2 admitted once rows are free
    assert backend._cache.used == 2
    assert sorted(row.slot for row in backend._rows) == [0, 1]  # root 2 took a freed slot


def test_fork_rejects_a_stale_position_and_reused_ids(llama):
    backend = HFBackend(llama, FakeTokenizer())
    backend.add(roots(PROMPTS[:1]))
    backend.step()
    backend.step()
    with pytest.raises(ValueError, match="lockstep"):
        backend.fork(Fork(0, 1, 0, 5, 6, 1))
    with pytest.raises(ValueError, match="already in use"):
        backend.fork(Fork(0, 0, 1, 5, 6, 1))
    with pytest.raises(ValueError):
        backend.add(roots(PROMPTS[:1]))


def test_a_trees_roots_are_admitted_together(llama):
    """Full parallel: the runner advances a tree in lockstep, so its roots enter as one group,
    even past max_rows into an empty batch; the next group waits until it fits."""
    backend = HFBackend(llama, FakeTokenizer(), temperature=1.0, max_rows=3)
    backend.add(tree_roots([(PROMPTS[0], 4, 4), (PROMPTS[1], 2, 2)]))
    assert ids(backend.step()) == [0, 1, 2, 3]  # one tree larger than max_rows runs alone
    backend.finish(0)
    assert ids(backend.step()) == [1, 2, 3]  # 3 reserved + 2 > max_rows
    backend.finish(1)
    assert ids(backend.step()) == [2, 3]  # 2 reserved + 2 > 3: the group waits
    backend.finish(2)
    assert ids(backend.step()) == [3, 4, 5]


def test_trees_are_told_apart_by_id_not_by_prompt(llama):
    """Two trees with the same prompt are two groups; each is still prefilled once per prompt."""
    backend = HFBackend(llama, FakeTokenizer(), temperature=1.0, max_rows=3)
    backend.add(tree_roots([(PROMPTS[0], 2, 2), (PROMPTS[0], 2, 2), (PROMPTS[1], 1, 1)]))
    assert ids(backend.step()) == [0, 1]  # tree 1 is not tree 0's: 2 + 2 > 3, it waits
    backend.finish(0)
    assert ids(backend.step()) == [1, 2, 3]  # 1 + 2 fits; tree 2 (1 more) waits
    backend.finish(2)
    assert ids(backend.step()) == [1, 3, 4]


def test_add_checks_trees_and_reuses_a_done_trees_id(llama):
    backend = HFBackend(llama, FakeTokenizer(), max_rows=3)
    a, b = tree_roots([(PROMPTS[0], 2, 2), (PROMPTS[1], 1, 1)])
    with pytest.raises(ValueError, match="tree id 0 is already in use"):
        backend.add([a, a])
    with pytest.raises(ValueError, match="sequence id 0 is already in use"):
        backend.add([a, NewTree(5, PROMPTS[1], (Root(0, 1),), 5)])
    with pytest.raises(ValueError, match="cap must be >= 0"):
        NewTree(0, PROMPTS[0], (Root(0, 1),), 5, cap=-1)
    with pytest.raises(ValueError, match="roots' sequence ids must differ"):
        NewTree(0, PROMPTS[0], (Root(0, 1), Root(0, 2)), 5)
    assert not backend.has_unfinished()  # a bad call queues nothing
    backend.add([a])
    with pytest.raises(ValueError, match="tree id 0 is already in use"):
        backend.add([NewTree.single(7, PROMPTS[3], 1, 5, tree_id=0)])  # tree 0 is still open
    backend.add([b])
    backend.step()
    for seq_id in (0, 1):
        backend.finish(seq_id)
    backend.add([NewTree.single(7, PROMPTS[3], 1, 5, tree_id=0)])  # tree 0 is done: id free
    assert ids(backend.step()) == [2, 7]


def test_a_tree_reserves_its_cap_until_its_sequences_finish(llama):
    """Eager modes: a tree of one root may grow to tree_cap rows (forks are never refused), so
    it reserves them; each finished sequence frees one, and a third tree waits until they fit."""
    backend = HFBackend(llama, FakeTokenizer(), temperature=1.0, max_rows=8)
    backend.add(tree_roots([(PROMPTS[i], 1, 4) for i in range(3)]))
    steps = backend.step()
    assert ids(steps) == [0, 1]  # 4 + 4 reserved: tree 2 waits though only 2 rows are live
    for child in (10, 11, 12):  # tree 0 grows to its cap
        backend.fork(Fork(0, child, steps[0].position, steps[0].token, None, child))
    assert ids(backend.step()) == [0, 1, 10, 11, 12]
    for child in (10, 11, 12):  # tree 0 reserves 3, 2, 1: 1 + 4 + 4 > 8 still
        backend.finish(child)
    steps = backend.step()
    assert ids(steps) == [0, 1]
    backend.fork(Fork(1, 13, steps[1].position, steps[1].token, None, 13))
    backend.finish(13)  # tree 1 reserves 3: 1 + 3 + 4 fits, with trees 0 and 1 still live
    assert ids(backend.step()) == [0, 1, 2]


def test_sampler_draws_from_the_warped_distribution(llama):
    backend = HFBackend(llama, FakeTokenizer(), temperature=0.5, top_k=3)
    logits = torch.tensor([[1.0, 0.5, 0.0, 2.0, -1.0]]).repeat(4000, 1)
    tokens = backend._sample(backend._warp(logits), [_row_key(i) for i in range(4000)], [0] * 4000)
    freq = torch.bincount(tokens, minlength=5).float() / len(tokens)
    expected = torch.tensor([1.0, 0.5, float("-inf"), 2.0, float("-inf")]).div(0.5).softmax(-1)
    assert torch.allclose(freq, expected, atol=0.03), (freq, expected)


def test_counter_uniforms_are_the_python_unit_uniform():
    """The device-side draws are bit for bit `seeds.unit_uniform` (the scripted backend's)."""
    import random

    from eager_eval.core.seeds import unit_uniform

    rng = random.Random(0)
    seeds = [rng.getrandbits(63) for _ in range(500)] + [0, 1, (1 << 63) - 1]
    positions = [rng.randrange(0, 1 << 20) for _ in seeds]
    got = counter_uniforms(torch.tensor([_row_key(s) for s in seeds]), torch.tensor(positions))
    assert got.tolist() == [unit_uniform(s, p) for s, p in zip(seeds, positions)]


def variant_model(kind: str):
    """Tiny models whose attention is not plain: Mistral's sliding window, Gemma 2's sliding
    layers and tanh-capped scores, gpt-oss's sliding layers and per-head sink logits (and MoE)."""
    torch.manual_seed(0)
    common = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 8, "max_position_embeddings": 256, "bos_token_id": None,
              "eos_token_id": None, "pad_token_id": 0, "sliding_window": 6}
    if kind == "mistral":
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**common))
    elif kind == "gemma2":  # eager: SDPA drops the softcap (transformers 5.0 picks SDPA)
        model = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
            **common, attn_logit_softcapping=5.0, final_logit_softcapping=None,
            attn_implementation="eager"))
    else:
        model = transformers.GptOssForCausalLM(transformers.GptOssConfig(
            **common, num_local_experts=4, num_experts_per_tok=2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            attn_implementation="eager"))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10.0)
    return model.eval()


@pytest.mark.parametrize("kind", ["mistral", "gemma2", "gpt_oss"])
def test_sliding_windows_softcaps_and_sinks_see_what_a_plain_forward_sees(kind):
    """Prompts and generations longer than the window; a fork copies the parent's slot."""
    model = variant_model(kind)
    backend = HFBackend(model, FakeTokenizer(), entropy_k=VOCAB, temperature=1.0)
    backend.add(roots([PROMPTS[0], PROMPTS[3]]))
    prefix = {0: list(PROMPTS[0]), 1: list(PROMPTS[3])}
    for t in range(12):
        steps = backend.step()
        for st in steps:
            ref = reference_logprobs(model, prefix[st.seq_id])
            got = torch.full((VOCAB,), float("nan"))
            got[list(st.topk_ids)] = torch.tensor(st.topk_logprobs)
            assert torch.allclose(got, ref, atol=ATOL), (kind, t, st.seq_id)
            prefix[st.seq_id].append(st.token)
        if t == 4:
            st = steps[0]
            child = backend.fork(Fork(st.seq_id, 9, st.position, st.topk_ids[0], st.topk_ids[1], 9))
            prefix[0][-1] = st.topk_ids[0]
            prefix[9] = prefix[0][:-1] + [child]


def test_a_model_with_layers_the_slot_cache_cannot_hold_is_refused_by_name(llama):
    from types import SimpleNamespace

    from eager_eval.common.errors import UserError
    from eager_eval.engines.hf_slots import UnsupportedModelError, check_model

    hybrid = SimpleNamespace(_supports_attention_backend=True, config=SimpleNamespace(
        model_type="qwen3_next", layer_types=["linear_attention", "full_attention"]))
    with pytest.raises(UnsupportedModelError, match="qwen3_next models: they have "
                       "linear_attention layers .* use --backend vllm") as err:
        check_model(hybrid)
    assert isinstance(err.value, UserError)
    own_attention = SimpleNamespace(_supports_attention_backend=False,
                                    config=SimpleNamespace(model_type="old"))
    with pytest.raises(UnsupportedModelError, match="attention interface"):
        check_model(own_attention)
    check_model(llama)  # plain attention: accepted


def test_random_forks_ends_and_admissions_keep_every_row_on_its_own_prefix(llama):
    """Many rows: slots grow, holes open and the highest rows move down into them; every
    reported distribution is still a plain forward of that row's own tokens."""
    import random

    rng = random.Random(4)
    backend = HFBackend(llama, FakeTokenizer(), entropy_k=VOCAB, temperature=1.0, max_rows=40)
    prompts = [tuple(rng.randrange(1, VOCAB) for _ in range(rng.randrange(1, 20)))
               for _ in range(8)]
    backend.add(tree_roots([(p, 2, 8) for p in prompts[:4]]))
    prefix = {i: list(prompts[i // 2]) for i in range(8)}
    next_id, moved, checked = 100, 0, 0
    for t in range(16):
        if t == 5:
            late = [NewTree(10 + i, prompts[4 + i], (Root(50 + i, 7 * i),), 50, 6) for i in range(4)]
            backend.add(late)
            prefix.update({50 + i: list(prompts[4 + i]) for i in range(4)})
        slots_before = {row.seq_id: row.slot for row in backend._rows}
        steps = backend.step()
        moved += sum(slots_before.get(row.seq_id, row.slot) != row.slot for row in backend._rows)
        for st in steps:
            got = torch.full((VOCAB,), float("nan"))
            got[list(st.topk_ids)] = torch.tensor(st.topk_logprobs)
            assert torch.allclose(got, reference_logprobs(llama, prefix[st.seq_id]), atol=ATOL)
            prefix[st.seq_id].append(st.token)
            checked += 1
        growing = t < 9  # forks first, then mostly ends: holes open below the highest rows
        for st in steps:
            if growing and rng.random() < 0.3 and len(backend._rows) < 30:
                child = next_id
                next_id += 1
                token = backend.fork(Fork(st.seq_id, child, st.position, st.token, None, child))
                prefix[child] = prefix[st.seq_id][:-1] + [token]
            elif rng.random() < (0.1 if growing else 0.3):
                backend.finish(st.seq_id)
    assert moved > 0 and checked > 150 and backend._cache.slots > 8


@pytest.mark.parametrize("chunk", [512, 8, 3])
def test_slot_attention_computes_transformers_eager_attention(monkeypatch, chunk):
    """A causal prefill of 40 queries over 64 columns, in query chunks or whole."""
    from types import SimpleNamespace

    from transformers.models.llama.modeling_llama import eager_attention_forward

    from eager_eval.engines import hf_slots

    monkeypatch.setattr(hf_slots, "PREFILL_QUERY_CHUNK", chunk)
    torch.manual_seed(0)
    query, key, value = torch.randn(2, 6, 40, 8), torch.randn(2, 3, 64, 8), torch.randn(2, 3, 64, 8)
    seen = torch.arange(64)[None, :] <= torch.arange(40)[:, None]  # [40, 64] causal
    got, _ = hf_slots.slot_attention(None, query, key, value, seen[None, None].expand(2, 1, 40, 64),
                                     scaling=0.3)
    additive = torch.zeros(40, 64).masked_fill(~seen, float("-inf"))[None, None]
    expected, _ = eager_attention_forward(SimpleNamespace(num_key_value_groups=2, training=False),
                                          query, key, value, additive, scaling=0.3)
    assert torch.allclose(got, expected, atol=1e-6)
