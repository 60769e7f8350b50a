"""Every backend reports each token's confidence, batched beside the entropy (engines/hf.py,
engines/simulated.py; vLLM's in tests/test_vllm_driver.py, the scripted engine's through the
runner's fallback in tests/test_deepconf.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from eager_eval.core.backend import NewTree  # noqa: E402
from eager_eval.core.entropy import topk_confidence, topk_entropy  # noqa: E402
from eager_eval.core.sampling import SamplingSettings  # noqa: E402
from eager_eval.engines.hf import HFBackend  # noqa: E402
from support import one_torch_thread  # noqa: E402,F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Tokenizer:
    eos_token_id = 3

    def get_vocab(self) -> dict[str, int]:
        return {"a": 7}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return " ".join(f"t{i}" for i in ids)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=128,
                                      bos_token_id=None, eos_token_id=None, pad_token_id=0)
    net = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 2:
                p.mul_(10.0)
    return net.eval()


def oracle(model, prefix) -> list[float]:
    """The log-probabilities of one batch-1 forward, most probable first."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prefix])).logits[0, -1]
    return sorted(logits.float().log_softmax(-1).tolist(), reverse=True)


@pytest.mark.parametrize("logprobs", [True, False])
def test_hf_steps_carry_the_confidence_of_their_k(model, logprobs):
    """k = 8 beside K = 5: the top-K and entropy read 5, the confidence 8; a run that never
    branches (logprobs=False) gets the confidence alone, computed on the device."""
    settings = SamplingSettings(entropy_k=5, confidence_k=8, temperature=0.9, logprobs=logprobs)
    backend = HFBackend(model, Tokenizer(), settings, max_rows=8)
    prompts = [(1, 9, 14, 22), (2, 17, 40)]
    backend.add([NewTree.single(i, p, 50 + i, 6) for i, p in enumerate(prompts)])
    tokens = {0: [], 1: []}
    for _ in range(6):
        for step in backend.step():
            want = oracle(model, prompts[step.seq_id] + tuple(tokens[step.seq_id]))
            assert step.confidence == pytest.approx(topk_confidence(want, 8), abs=1e-3)
            if logprobs:
                assert len(step.topk_ids) == 5
                assert step.entropy == pytest.approx(topk_entropy(want[:5]), abs=1e-3)
            else:
                assert step.topk_ids == () == step.topk_logprobs and step.entropy is None
            tokens[step.seq_id].append(step.token)


def test_hf_confidence_off_reports_none(model):
    backend = HFBackend(model, Tokenizer(), SamplingSettings(confidence_k=0, logprobs=False))
    backend.add([NewTree.single(0, (1, 2, 3), 5, 3)])
    assert all(s.confidence is None for s in backend.step())


def test_hf_confidence_leaves_the_tokens_alone(model):
    def tokens(settings):
        backend = HFBackend(model, Tokenizer(), settings)
        backend.add([NewTree.single(0, (1, 2, 3), 5, 8)])
        return [s.token for _ in range(8) for s in backend.step()]

    base = dict(temperature=1.0, logprobs=False)
    assert tokens(SamplingSettings(confidence_k=0, **base)) == \
        tokens(SamplingSettings(confidence_k=20, **base))


def test_simulated_backend_reports_the_confidence_with_or_without_its_top_k():
    from golden_runs import WordTokenizer

    from eager_eval.engines.simulated import SimulatedBackend, TraceProfile

    for logprobs in (True, False):
        backend = SimulatedBackend(WordTokenizer(), TraceProfile(length=40), shapes=16,
                                   logprobs=logprobs, confidence_k=7)
        reference = SimulatedBackend(WordTokenizer(), TraceProfile(length=40), shapes=16)
        backend.add([NewTree.single(0, (1, 2, 3), 9, 40)])
        reference.add([NewTree.single(0, (1, 2, 3), 9, 40)])
        for _ in range(10):
            for step, ref in zip(backend.step(), reference.step()):
                assert step.token == ref.token
                assert step.confidence == pytest.approx(topk_confidence(ref.topk_logprobs, 7))
                assert bool(step.topk_ids) is logprobs
