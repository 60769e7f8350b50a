"""The runner on the HF backend: the same decisions as on the scripted backend.

The scripted backend here reads its distributions from the same tiny model, one unbatched
forward per prefix (the oracle). With greedy decoding both engines see the same distributions,
so the runner must build the same trees: same forks at the same positions, same tokens.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from test_hf_backend import FakeTokenizer, reference_logprobs, tiny_model  # noqa: E402

from eager_eval.backends.base import NewSequence  # noqa: E402
from eager_eval.backends.hf import HFBackend  # noqa: E402
from eager_eval.backends.scripted import ScriptedBackend  # noqa: E402
from eager_eval.config import EagerConfig  # noqa: E402
from eager_eval.runner import PromptInput, run  # noqa: E402
from eager_eval.seeds import branch_seed  # noqa: E402
from support import one_torch_thread  # noqa: E402,F401 (fixture)

PROMPTS = [PromptInput(p) for p in [(1, 9, 14, 22, 31), (2, 17), (5, 60, 61, 62, 11, 40, 8)]]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def oracle_script(model, k):
    def script(prompt, generated):
        logprobs = reference_logprobs(model, list(prompt) + list(generated))
        values, ids = logprobs.topk(k)
        return list(zip(ids.tolist(), values.tolist()))

    return script


def trees(result):
    return [[(t.round, [(s.index, s.parent, s.fork_position, s.tokens) for s in t.sequences],
              [(e.position, e.parent, e.child, e.parent_token, e.child_token) for e in t.branch_events])
             for t in p.trees] for p in result.prompts]


@pytest.mark.parametrize("mode,percentile", [("eager_init", None), ("eager_adapt", 90.0)])
def test_hf_backend_builds_the_same_tree_as_the_scripted_oracle(model, mode, percentile):
    config = EagerConfig(mode=mode, theta=1.2, max_seqs=4, percentile=percentile, topk=20,
                         think_end=None, temperature=0.0, max_new_tokens=14, seed=3)
    hf = HFBackend(model, FakeTokenizer(), topk=20, temperature=0.0)
    on_hf = run(PROMPTS, hf, config)
    scripted = ScriptedBackend(oracle_script(model, 20), eos_token_ids=hf.eos_token_ids, greedy=True)
    on_script = run(PROMPTS, scripted, config)
    assert trees(on_hf) == trees(on_script)
    assert sum(len(p.branch_events) for p in on_hf.prompts) > 0  # the case really branches


def test_theta_inf_on_hf_equals_plain_seeded_sampling(model):
    config = EagerConfig(mode="eager_init", theta=math.inf, max_seqs=4, think_end=None,
                         temperature=1.0, max_new_tokens=12, seed=7)
    result = run(PROMPTS, HFBackend(model, FakeTokenizer(), temperature=1.0), config)
    assert [p.n_sequences for p in result.prompts] == [1, 1, 1]
    # plain sampling: each prompt alone, seeded with branch_seed(seed, i, 0), no runner at all
    for i, prompt in enumerate(PROMPTS):
        alone = HFBackend(model, FakeTokenizer(), temperature=1.0)
        alone.add([NewSequence(0, prompt.tokens, branch_seed(7, i, 0), 12)])
        tokens = []
        seq = result.prompts[i].sequences[0]
        while len(tokens) < len(seq.tokens):
            (step,) = alone.step()
            tokens.append(step.token)
        assert tokens == seq.tokens
