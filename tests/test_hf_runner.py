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

from eager_eval.core.backend import NewTree  # noqa: E402
from eager_eval.engines.hf import HFBackend  # noqa: E402
from eager_eval.engines.scripted import ScriptedBackend  # noqa: E402
from eager_eval.core.config import EagerConfig  # noqa: E402
from eager_eval.core.runner import PromptInput, run  # noqa: E402
from eager_eval.core.seeds import branch_seed  # noqa: E402
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
    config = EagerConfig(mode=mode, theta=1.2, max_seqs=4, percentile=percentile, entropy_k=20,
                         think_end=None, temperature=0.0, max_new_tokens=14, seed=3)
    hf = HFBackend(model, FakeTokenizer(), entropy_k=20, temperature=0.0)
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
        alone.add([NewTree.single(0, prompt.tokens, branch_seed(7, i, 0), 12)])
        tokens = []
        seq = result.prompts[i].sequences[0]
        while len(tokens) < len(seq.tokens):
            (step,) = alone.step()
            tokens.append(step.token)
        assert tokens == seq.tokens


class _RowCounting(HFBackend):
    """HFBackend that records its most live rows (and occupied KV-cache slots) after any step."""

    peak = 0

    def step(self):
        steps = super().step()
        self.peak = max(self.peak, len(self._rows), self._cache.used)
        return steps


@pytest.mark.parametrize("mode,policy", [("eager_init", "top2"), ("eager_adapt", "sample")])
def test_max_rows_bounds_live_rows_and_never_changes_the_trees(model, mode, policy):
    """Every test branches, so every tree grows to its cap: with max_rows=8 and cap 4 at most two
    trees are in flight and the batch never holds more than 8 rows, yet every tree (sampled with
    its own seeds) is the one an unbounded batch builds."""
    prompts = PROMPTS + [PromptInput(p) for p in [(4, 4, 90), (7, 33, 21, 70), (12, 9)]]
    config = EagerConfig(mode=mode, theta=0.01, max_seqs=4, percentile=None, entropy_k=20,
                         think_end=None, temperature=1.0, max_new_tokens=8, seed=5,
                         branch_policy=policy, max_rounds=2)
    runs = {}
    for max_rows in (8, 1000):
        backend = _RowCounting(model, FakeTokenizer(), entropy_k=20, temperature=1.0, max_rows=max_rows)
        runs[max_rows] = (run(prompts, backend, config), backend.peak)
    (bounded, peak), (free, free_peak) = runs[8], runs[1000]
    assert peak <= 8 < free_peak  # the bound binds: unbounded, more trees grow at once
    # every tree really branched (but for a root that ended at position 0)
    assert all(t.hit_cap for p in free.prompts for t in p.trees if len(t.sequences[0].tokens) > 1)
    assert trees(bounded) == trees(free)


@pytest.mark.parametrize("mode", ["eager_adapt", "eager"])
def test_overlapping_rounds_on_hf_build_the_trees_of_sequential_rounds(model, mode):
    """HF cannot fork behind its lockstep, so its rounds start once the earlier trees settle
    (schedule.py, no guaranteed floors): the trees must be those of rounds run in sequence."""
    prompts = PROMPTS + [PromptInput(p) for p in [(4, 4, 90), (7, 33, 21, 70), (12, 9)]]
    config = EagerConfig(mode=mode, theta=2.9, max_seqs=3, percentile=None, entropy_k=20,
                         think_end=None, temperature=1.0, max_new_tokens=10, seed=2, window=3)
    verifier = (lambda p, text: len(text) % 3 == 0) if mode == "eager" else None

    class Recording(HFBackend):
        added_while_live = 0

        def add(self, sequences):
            self.added_while_live += bool(self._rows)
            super().add(sequences)

    backends = [Recording(model, FakeTokenizer(), entropy_k=20, temperature=1.0) for _ in range(2)]
    runs = [run(prompts, backend, config, verifier=verifier, overlap_rounds=overlap)
            for backend, overlap in zip(backends, (False, True))]
    assert len(runs[0].rounds) >= 2  # it reallocates
    assert backends[0].added_while_live == 0
    # full EAGer grades finished sequences: an unsolved prompt is known only when it ends
    assert backends[1].added_while_live >= (1 if mode == "eager_adapt" else 0)
    assert trees(runs[1]) == trees(runs[0])
    assert [r.allotments for r in runs[1].rounds] == [r.allotments for r in runs[0].rounds]
