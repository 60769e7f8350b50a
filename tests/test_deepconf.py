"""Confidence in the runner: recorded for every sequence of every mode, DeepConf online
(mode=deepconf: warm-up bar, early stop, consensus stop) and EAGer's confidence_stop
(core/tree.py, core/schedule.py; docs/CONFIDENCE.md)."""

from __future__ import annotations

import pytest

from eager_eval.core.confidence import confidence_stats, percentile
from eager_eval.core.config import ConfigError, EagerConfig
from eager_eval.core.entropy import topk_confidence
from eager_eval.core.results import FinishReason
from eager_eval.core.runner import PromptInput, run
from eager_eval.engines.scripted import VOCAB, ScriptedBackend, hashed_script, mixed_script

SCRIPT = hashed_script(salt=11, eos_after=24)
PROMPTS = [PromptInput((1, 2, 3 + i)) for i in range(4)]


def backend(**options):
    return ScriptedBackend(SCRIPT, vocab=VOCAB, greedy=False, **options)


def config(mode: str, **changes) -> EagerConfig:
    base = dict(mode=mode, max_seqs=6, max_new_tokens=40, confidence_window=4, temperature=0.8,
                theta=1.2, think_end=None, seed=3)
    if mode == "deepconf":
        base["deepconf_warmup"] = 2
    return EagerConfig(**{**base, **changes})


def token_confidences(prompt: PromptInput, tokens: list[int]) -> list[float]:
    """What the runner's fallback reads for the scripted engine: the script's distribution at
    each position (its whole support: fewer than k entries), replayed."""
    return [topk_confidence([lp for _, lp in SCRIPT(prompt.tokens, tuple(tokens[:t]))], 20)
            for t in range(len(tokens))]


def trees_of(result):
    return [[(t.round, t.cap, t.confidence_bar,
              [(s.index, s.parent, s.fork_position, tuple(s.tokens), s.finish_reason,
                s.confidence) for s in t.sequences]) for t in p.trees] for p in result.prompts]


@pytest.mark.parametrize("mode", ["full_parallel", "eager_init", "eager_adapt", "deepconf"])
def test_every_sequence_records_the_confidence_of_all_its_tokens(mode):
    """A fork's child shares its parent's confidences before the fork position: its stats are
    those of its whole token list, as a sequence generated alone would have."""
    c = config(mode)
    result = run(PROMPTS, backend(), c)
    seen = 0
    for prompt, p in zip(PROMPTS, result.prompts):
        for s in p.sequences:
            want = confidence_stats(token_confidences(prompt, s.tokens), c.confidence_window)
            for m in ("mean", "tail", "lowest_group", "bottom_10"):
                assert getattr(s.confidence, m) == pytest.approx(getattr(want, m), rel=1e-6)
            seen += 1
    assert seen >= 4 * (2 if mode == "eager_init" else 6) - 8


def test_confidence_k_zero_records_none_and_changes_no_token():
    on, off = run(PROMPTS, backend(), config("eager_adapt")), run(
        PROMPTS, backend(), config("eager_adapt", confidence_k=0))
    assert all(s.confidence is None for p in off.prompts for s in p.sequences)
    assert [[s.tokens for s in p.sequences] for p in on.prompts] == \
        [[s.tokens for s in p.sequences] for p in off.prompts]


# ---- DeepConf online -------------------------------------------------------------------------


def test_deepconf_warmup_sets_the_bar_and_later_sequences_stop_below_it():
    c = config("deepconf", deepconf_percentile=60)
    result = run(PROMPTS, backend(), c)
    stopped = 0
    for prompt, p in zip(PROMPTS, result.prompts):
        warmup, later = p.trees
        assert (warmup.round, len(warmup.sequences), warmup.confidence_bar) == (0, 2, None)
        assert (later.round, len(later.sequences), later.cap) == (1, 4, 4)
        assert all(s.finish_reason is not FinishReason.CONFIDENCE for s in warmup.sequences)
        bar = percentile([s.confidence.lowest_group for s in warmup.sequences], 60)
        assert later.confidence_bar == pytest.approx(bar)
        for s in later.sequences:
            values = token_confidences(prompt, s.tokens)
            means = [sum(values[i - 3:i + 1]) / 4 for i in range(3, len(values))]
            if s.finish_reason is FinishReason.CONFIDENCE:  # at its first group below the bar
                stopped += 1
                assert means[-1] < bar and all(m >= bar for m in means[:-1])
            else:
                assert all(m >= bar for m in means)
    assert stopped > 0  # the test would prove nothing otherwise
    assert [len(p.sequences) for p in result.prompts] == [6] * 4  # M each: the same budget
    assert [r.allotments for r in result.rounds] == [{p: 2 for p in range(4)},
                                                    {p: 4 for p in range(4)}]


def test_deepconf_saves_tokens_against_full_parallel_with_the_same_seeds_for_its_warmup():
    dc = run(PROMPTS, backend(), config("deepconf", deepconf_percentile=90))
    fp = run(PROMPTS, backend(), config("full_parallel"))
    assert dc.tokens_generated < fp.tokens_generated
    for d, f in zip(dc.prompts, fp.prompts):  # round 0's seeds are Full Parallel's first two
        assert [s.tokens for s in d.trees[0].sequences] == [s.tokens for s in f.sequences[:2]]


@pytest.mark.parametrize("options", [
    dict(shuffle_seed=4), dict(tokens_per_step=lambda seq, step: 1 + (seq + step) % 3),
    dict(start_delay=lambda seq: seq % 4, shuffle_seed=1)])
def test_deepconf_trees_do_not_depend_on_engine_scheduling(options):
    c = config("deepconf", deepconf_percentile=70)
    assert trees_of(run(PROMPTS, backend(**options), c)) == trees_of(run(PROMPTS, backend(), c))
    assert trees_of(run(PROMPTS, backend(), c, overlap_rounds=False)) == \
        trees_of(run(PROMPTS, backend(), c))


def test_deepconf_resumes_from_stored_trees():
    c = config("deepconf", deepconf_percentile=70)
    whole = run(PROMPTS, backend(), c)

    class Store(dict):
        def get(self, prompt_idx, round_idx):
            return super().get((prompt_idx, round_idx))

        def put(self, tree):
            self[(tree.prompt_idx, tree.round)] = tree

    store = Store()
    for p in whole.prompts[:3]:  # a crash after the warm-ups and some later trees
        store.put(p.trees[0])
    store.put(whole.prompts[0].trees[1])
    resumed = run(PROMPTS, backend(), c, store=store)
    assert trees_of(resumed) == trees_of(whole)


def test_consensus_stops_the_live_sequences_once_one_answer_holds_the_share():
    """The test (the pipeline's answer vote) sees the warm-up votes at or above the bar and
    the finished later sequences, each weighted by its lowest group confidence."""
    seen = []

    def consensus(prompt_idx, votes):
        seen.append((prompt_idx, list(votes)))
        return 1.0  # every answer agrees

    c = config("deepconf", deepconf_percentile=10, deepconf_consensus=0.95, max_new_tokens=40)
    result = run(PROMPTS, backend(), c, consensus=consensus)
    reasons = [s.finish_reason for p in result.prompts for s in p.trees[1].sequences]
    assert FinishReason.CONSENSUS in reasons
    assert seen and all(w > 0 for _, votes in seen for _, w in votes)
    never = run(PROMPTS, backend(), c, consensus=lambda p, votes: 0.5)
    assert FinishReason.CONSENSUS not in [s.finish_reason for p in never.prompts for s in p.sequences]
    with pytest.raises(ConfigError, match="deepconf_consensus"):
        run(PROMPTS, backend(), c)  # a consensus stop needs the answers' vote


# ---- EAGer's rounds with a confidence stop ---------------------------------------------------


def test_confidence_stop_gives_stopped_sequences_back_to_the_pool():
    """Calm prompts (even last character) leave budget; the branching ones get it, and a
    reallocated sequence that stops below its prompt's bar (set by its EAGer-init tree) is
    given back: the next round's budget counts only the sequences kept."""
    mixed = mixed_script(salt=5)
    prompts = [PromptInput((1, 2, 3 + i)) for i in range(6)]
    settings = dict(theta=1.0, max_seqs=4, max_new_tokens=30)
    c = config("eager_adapt", confidence_stop=True, deepconf_percentile=50, **settings)
    result = run(prompts, ScriptedBackend(mixed, vocab=VOCAB, greedy=False), c)
    plain = run(prompts, ScriptedBackend(mixed, vocab=VOCAB, greedy=False),
                config("eager_adapt", **settings))
    assert [[s.tokens for s in p.trees[0].sequences] for p in result.prompts] == \
        [[s.tokens for s in p.trees[0].sequences] for p in plain.prompts]  # round 0: the same
    later = [(p, t) for p in result.prompts for t in p.trees if t.round > 0]
    assert later and all(t.confidence_bar == pytest.approx(percentile(
        [s.confidence.lowest_group for s in p.trees[0].sequences], 50)) for p, t in later)
    assert any(s.finish_reason is FinishReason.CONFIDENCE for _, t in later for s in t.sequences)
    assert len(result.rounds) > 2
    for r in result.rounds[1:]:  # each round's budget counts only the sequences kept
        kept = sum(t.n_counted for p in result.prompts for t in p.trees if t.round < r.round)
        assert r.budget == c.budget(len(prompts)) - kept
    assert sum(t.n_counted for p in result.prompts for t in p.trees) <= c.budget(len(prompts))


def test_confidence_stop_rounds_always_end():
    """Every sequence stopping (a bar no group reaches) must not loop: a round that keeps
    nothing ends the reallocation."""
    prompts = [PromptInput((1, 2, 3 + i)) for i in range(6)]
    c = config("eager_adapt", theta=1.0, max_seqs=4, confidence_stop=True,
               deepconf_percentile=99, confidence_window=1, max_new_tokens=30)
    result = run(prompts, ScriptedBackend(mixed_script(salt=5), vocab=VOCAB, greedy=False), c)
    last = [t for p in result.prompts for t in p.trees if t.round == result.rounds[-1].round]
    assert result.rounds[-1].round >= 2 and result.rounds[-1].budget > 0
    assert last and not any(t.n_counted for t in last)  # it kept nothing: the end


# ---- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, words", [
    (dict(deepconf_percentile=0), "deepconf_percentile must be in (0, 100)"),
    (dict(deepconf_percentile=100), "deepconf_percentile must be in (0, 100)"),
    (dict(confidence_window=0), "confidence_window must be an integer >= 1"),
    (dict(mode="deepconf", max_seqs=4, deepconf_warmup=4), "deepconf_warmup=4 leaves no budget"),
    (dict(mode="deepconf", max_seqs=4, deepconf_warmup=2, confidence_k=0), "confidence_k must be"),
    (dict(mode="eager_init", confidence_stop=True), "confidence_stop applies to"),
    (dict(confidence_k=-1), "confidence_k must be an integer >= 0"),
    (dict(deepconf_consensus=1.5), "deepconf_consensus must be in (0, 1]"),
    (dict(confidence_measure="median"), "confidence_measure must be one of"),
])
def test_bad_settings_are_one_clear_error(changes, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        EagerConfig(**changes)


def test_confidence_k_follows_entropy_k_and_is_checked_against_the_vocabulary():
    assert EagerConfig(entropy_k=5).to_dict()["confidence_k"] == 5
    assert EagerConfig(entropy_k=5, confidence_k=8).sampling.logprobs_k == 8
    assert EagerConfig(mode="full_parallel", entropy_k=30, confidence_k=4).sampling.logprobs_k == 4
    EagerConfig(entropy_k=5).verify_model(vocab_size=10)
    with pytest.raises(ConfigError, match=r"confidence_k must be 0 \(off\) or <= the model's "
                                          r"vocabulary size \(10 tokens\)"):
        EagerConfig(entropy_k=5, confidence_k=12).verify_model(vocab_size=10)


def test_every_front_end_takes_the_settings_by_name():
    c = EagerConfig.from_mapping({"mode": "deepconf", "max_seqs": "8", "deepconf_warmup": "3",
                                  "deepconf_percentile": "10", "confidence_window": "16",
                                  "confidence_k": "none", "deepconf_consensus": "0.95",
                                  "confidence_measure": "tail"})
    assert (c.deepconf_warmup, c.deepconf_percentile, c.confidence_window, c.resolved_confidence_k,
            c.deepconf_consensus, c.confidence_measure.value) == (3, 10.0, 16, 20, 0.95, "tail")
    assert not c.is_branching and c.stops_on_confidence
    assert EagerConfig.from_mapping({"mode": "eager", "confidence_stop": "true"}).confidence_stop


@pytest.mark.parametrize("changes", [dict(mode="deepconf", deepconf_percentile=70),
                                     dict(mode="eager_adapt", confidence_stop=True,
                                          deepconf_percentile=50, theta=1.0, max_seqs=4)])
def test_stops_are_the_same_on_any_number_of_workers(changes):
    """DeepConf's bar travels with its tree (Start.stop), so the trees are those of one backend
    on a fleet of in-process workers, a lost one included (engines/simulated_fleet.py)."""
    from eager_eval.engines.simulated_fleet import SimulatedFleet

    prompts = [PromptInput((1, 2, 3 + i)) for i in range(6)]
    c = config(**changes)

    def new_backend():
        return ScriptedBackend(mixed_script(salt=5), vocab=VOCAB, greedy=False,
                               tokens_per_step=lambda i, s: 1 + (i + s) % 2)

    expected = trees_of(run(prompts, new_backend(), c))
    assert any(s[4] is FinishReason.CONFIDENCE for p in expected for t in p for s in t[3])
    for replicas, lose in ((2, None), (3, {1: 4.0})):
        assert trees_of(run(prompts, SimulatedFleet(new_backend, replicas, c, lose=lose), c)) \
            == expected


def test_consensus_needs_one_engine_for_now():
    from eager_eval.engines.simulated_fleet import SimulatedFleet

    c = config("deepconf", deepconf_consensus=0.9)
    fleet = SimulatedFleet(lambda: backend(), 2, c)
    with pytest.raises(ConfigError, match="deepconf_consensus runs on one engine only"):
        run(PROMPTS, fleet, c, consensus=lambda p, votes: 1.0)
