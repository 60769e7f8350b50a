"""The runner: modes, seeds, order independence, accounting, resume and bad input."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scripting import flat, hashed_script, peaked, EOS

from eager_eval.engines.scripted import ScriptedBackend
from eager_eval.core.config import ConfigError, EagerConfig
from eager_eval.core.results import TreeResult
from eager_eval.core.runner import PromptInput, run
from eager_eval.core.seeds import branch_seed

PROMPTS = [PromptInput((i, 2 * i)) for i in range(1, 5)]


def cfg(**kw) -> EagerConfig:
    base = dict(mode="eager_adapt", theta=0.9, max_seqs=4, percentile=None, think_end=None,
                max_new_tokens=30, seed=11)
    base.update(kw)
    return EagerConfig(**base)


def shape(result):
    """Everything that defines a run's trees, as plain values."""
    return [[(t.round, t.cap, t.theta, [(s.index, s.parent, s.fork_position, s.seed, tuple(s.tokens))
                                        for s in t.sequences],
              [(e.position, e.parent, e.child, e.parent_token, e.child_token) for e in t.branch_events])
             for t in p.trees] for p in result.prompts]


def test_same_seed_same_tree_and_numbers():
    a = run(PROMPTS, ScriptedBackend(hashed_script(1), greedy=False), cfg())
    b = run(PROMPTS, ScriptedBackend(hashed_script(1), greedy=False), cfg())
    assert shape(a) == shape(b)
    assert a.tokens_generated == b.tokens_generated and a.n_sequences == b.n_sequences
    c = run(PROMPTS, ScriptedBackend(hashed_script(1), greedy=False), cfg(seed=12))
    assert shape(c) != shape(a)


class _AddRecording(ScriptedBackend):
    def add(self, trees):
        self.added = [*getattr(self, "added", []), list(trees)]
        super().add(trees)


@pytest.mark.parametrize("mode", ["full_parallel", "eager_adapt"])
@pytest.mark.parametrize("late_forks", [False, True])
def test_each_tree_is_added_whole_with_its_cap(mode, late_forks):
    """Backends admit a tree as one unit (its roots together) and bound memory by its cap: the
    final cap, or (a tree started on a guaranteed floor) a bound at least as large."""
    def script(prompt, generated):  # odd prompts branch to their cap, even ones never branch
        if len(generated) >= 5:
            return peaked(EOS)
        return flat([5, 6, 7]) if prompt[0] % 2 else peaked(8)

    backend = _AddRecording(script, greedy=False)
    backend.late_forks = late_forks
    result = run(PROMPTS, backend, cfg(mode=mode))
    trees = [t for p in result.prompts for t in p.trees]
    # eager_adapt: the even prompts' unspent budget is a retry with cap 3 for each odd prompt
    assert [r.allotments for r in result.rounds[1:]] == ([] if mode == "full_parallel"
                                                         else [{0: 3, 2: 3}])
    added = [t for call in backend.added for t in call]
    assert len({t.tree_id for t in added}) == len(added) == len(trees)
    n_roots = 4 if mode == "full_parallel" else 1
    assert all(len(t.roots) == n_roots for t in added)
    got = sorted((t.prompt, t.cap) for t in added)
    want = sorted((PROMPTS[t.prompt_idx].tokens, t.cap) for t in trees)
    if late_forks:
        assert [p for p, _ in got] == [p for p, _ in want]
        assert all(a >= b for (_, a), (_, b) in zip(got, want))
    else:
        assert got == want


def test_scripted_backend_refuses_a_tree_id_in_use():
    from eager_eval.core.backend import NewTree

    backend = ScriptedBackend(hashed_script(1))
    backend.add([NewTree.single(0, (1,), 1, 5, tree_id=0, cap=2)])
    with pytest.raises(ValueError, match="tree id 0"):
        backend.add([NewTree.single(1, (1,), 2, 5, tree_id=0, cap=2)])
    backend.add([NewTree.single(2, (1,), 3, 5)])


@settings(max_examples=25, deadline=None)
@given(salt=st.integers(0, 10_000), lag=st.integers(0, 3), burst=st.integers(1, 3),
       shuffle=st.integers(0, 100), policy=st.sampled_from(["top2", "sample"]),
       percentile=st.sampled_from([None, 75.0]), defer=st.booleans())
def test_scheduling_order_never_changes_the_tree(salt, lag, burst, shuffle, policy, percentile, defer):
    config = cfg(branch_policy=policy, percentile=percentile)
    lockstep = run(PROMPTS, ScriptedBackend(hashed_script(salt), greedy=False), config)
    engine_like = ScriptedBackend(
        hashed_script(salt), greedy=False,
        start_delay=lambda i: (i * 7 + salt) % (lag + 1),
        tokens_per_step=lambda i, s: 1 + (i + s + salt) % burst,
        shuffle_seed=shuffle, defer_child_token=defer,
    )
    assert shape(run(PROMPTS, engine_like, config)) == shape(lockstep)


def test_theta_inf_equals_plain_sampling():
    eager = run(PROMPTS, ScriptedBackend(hashed_script(5), greedy=False),
                cfg(mode="eager_init", theta=math.inf))
    plain = run(PROMPTS, ScriptedBackend(hashed_script(5), greedy=False),
                cfg(mode="full_parallel", max_seqs=1))
    tokens = lambda r: [[(s.seed, s.tokens) for s in p.sequences] for p in r.prompts]  # noqa: E731
    assert tokens(eager) == tokens(plain)
    assert [p.sequences[0].seed for p in eager.prompts] == [branch_seed(11, i, 0) for i in range(4)]


def test_full_parallel_samples_m_independent_sequences():
    result = run(PROMPTS, ScriptedBackend(hashed_script(5), greedy=False), cfg(mode="full_parallel"))
    for i, p in enumerate(result.prompts):
        assert p.n_sequences == 4 and not p.branch_events
        assert [s.seed for s in p.sequences] == [branch_seed(11, i, j) for j in range(4)]
        assert all(s.parent is None and s.fork_position == 0 for s in p.sequences)
    assert len(result.rounds) == 1


def test_token_accounting_counts_a_shared_prefix_once():
    def script(prompt, generated):
        if len(generated) >= 5:
            return peaked(EOS)
        return flat([5, 6]) if len(generated) == 3 else peaked(3)

    result = run([PromptInput((1,))], ScriptedBackend(script), cfg(mode="eager_init", theta=0.5))
    p = result.prompts[0]
    # root: 6 tokens; child forks at 3 and owns positions 3..5: 3 tokens
    assert [len(s.tokens) for s in p.sequences] == [6, 6]
    assert p.tokens_in_outputs == 12
    assert p.tokens_generated == 9
    assert result.tokens_generated == 9
    assert result.rounds[0].tokens_generated == 9


class DictStore:
    def __init__(self):
        self.trees: dict[tuple[int, int], dict] = {}

    def get(self, p, r):
        data = self.trees.get((p, r))
        return TreeResult.from_dict(data) if data else None

    def put(self, tree):
        self.trees[(tree.prompt_idx, tree.round)] = tree.to_dict()


def test_resume_from_stored_trees_gives_the_same_run_without_regenerating():
    config = cfg(mode="eager_adapt", max_seqs=3, theta=0.7)
    store = DictStore()
    first = run(PROMPTS, ScriptedBackend(hashed_script(9), greedy=False), config, store=store)
    # Drop one prompt's trees, as if the run was cut off while it was decoding.
    del store.trees[(2, 0)]
    for key in [k for k in store.trees if k[1] > 0]:
        del store.trees[key]
    backend = ScriptedBackend(hashed_script(9), greedy=False)
    second = run(PROMPTS, backend, config, store=store)
    assert shape(second) == shape(first)
    started = {f.parent for f in backend.forks}
    assert backend.steps_taken > 0 and len(started) <= first.n_sequences


def test_on_tree_done_reports_every_tree_once():
    seen = []
    result = run(PROMPTS, ScriptedBackend(hashed_script(2), greedy=False), cfg(),
                 on_tree_done=lambda t: seen.append((t.prompt_idx, t.round)))
    expected = sorted((p.prompt_idx, t.round) for p in result.prompts for t in p.trees)
    assert sorted(seen) == expected


@pytest.mark.parametrize("field,value,fragment", [
    ("theta", 0, "theta must be a number of nats > 0"),
    ("theta", -1.0, "theta"),
    ("theta", float("nan"), "theta"),
    ("max_seqs", 0, "max_seqs must be an integer >= 1"),
    ("entropy_k", 1, "entropy_k must be an integer >= 2"),
    ("percentile", 0, "percentile must be in (0, 100]"),
    ("percentile", 101, "percentile"),
    ("mode", "beam", "mode must be one of: full_parallel, eager_init, eager_adapt, eager"),
    ("branch_policy", "top3", "branch_policy must be one of: top2, sample"),
    ("max_new_tokens", 0, "max_new_tokens must be an integer >= 1"),
])
def test_bad_settings_name_the_value_and_the_fix(field, value, fragment):
    with pytest.raises(ConfigError) as err:
        EagerConfig(**{field: value})
    assert fragment in str(err.value)
    assert repr(value) in str(err.value) or "nan" in str(err.value)


def test_full_eager_without_labels_is_a_clear_error():
    with pytest.raises(ConfigError, match="full EAGer needs a verifier.*eager_adapt"):
        run(PROMPTS, ScriptedBackend(hashed_script(0)), cfg(mode="eager"))


def test_empty_prompt_list_is_a_clear_error():
    with pytest.raises(ValueError, match="empty prompt list"):
        run([], ScriptedBackend(hashed_script(0)), cfg())


def test_from_mapping_parses_front_end_strings_and_rejects_unknown_names():
    c = EagerConfig.from_mapping({"theta": "inf", "percentile": "none", "max_seqs": "8", "mode": "EAGER_INIT"})
    assert c.theta == math.inf and c.percentile is None and c.max_seqs == 8 and c.mode.value == "eager_init"
    with pytest.raises(ConfigError, match="unknown EAGer setting 'max_seq' \\(did you mean 'max_seqs'\\?\\)"):
        EagerConfig.from_mapping({"max_seq": 4})


def test_core_modules_import_no_engine_or_harness():
    code = (
        "import sys, eager_eval.core.config, eager_eval.core.entropy, eager_eval.core.controller, "
        "eager_eval.core.budget, eager_eval.core.runner, eager_eval.core.results, eager_eval.engines.scripted, "
        "eager_eval.core.tree, eager_eval.core.schedule, eager_eval.core.text_watch, "
        "eager_eval.engines.simulated, eager_eval.engines.tokens\n"
        "heavy = [m for m in ('torch', 'transformers', 'vllm', 'lm_eval', 'inspect_ai') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
