"""Pins eager_eval/pipeline/store.py: the on-disk TreeStore behind --resume."""

from __future__ import annotations

import json

import pytest
from scripting import hashed_script

from eager_eval.engines.scripted import ScriptedBackend
from eager_eval.core.config import EagerConfig
from eager_eval.core.results import BranchEvent, FinishReason, SequenceResult, TreeResult
from eager_eval.core.runner import PromptInput, run
from eager_eval.pipeline.store import JsonlTreeStore, ResumeMismatchError, StoreError, check_resumable

FINGERPRINT = {"model": "m", "data_sha256": "abc", "settings": {"mode": "eager_adapt", "theta": 0.7}}


def tree(prompt_idx: int, round_idx: int = 0, n: int = 2) -> TreeResult:
    seqs = [SequenceResult(i, round_idx, None if i == 0 else 0, 0 if i == 0 else 2, 100 + i,
                           [5, 6, 7, i], f"text {i}", FinishReason.EOS) for i in range(n)]
    events = [BranchEvent(2, 0, i, 2.5, 2.1, 7, 8) for i in range(1, n)]
    return TreeResult(prompt_idx, round_idx, 4, 0.7, seqs, events, hit_cap=False)


def lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_put_appends_one_line_per_tree_after_a_header(tmp_path):
    path = tmp_path / "trees" / "eager_adapt.jsonl"
    with JsonlTreeStore(path, FINGERPRINT) as store:
        store.put(tree(0))
        store.put(tree(1, n=3))
        assert len(lines(path)) == 3  # on disk at once, not at close
    header = json.loads(lines(path)[0])
    assert header["fingerprint"] == FINGERPRINT
    assert json.loads(lines(path)[2])["prompt_idx"] == 1


def test_reopening_loads_the_stored_trees(tmp_path):
    path = tmp_path / "t.jsonl"
    with JsonlTreeStore(path, FINGERPRINT) as store:
        store.put(tree(0))
        store.put(tree(0, round_idx=1))
    with JsonlTreeStore(path, FINGERPRINT) as store:
        assert store.resumed == 2
        assert store.get(0, 0) == tree(0)
        assert store.get(0, 1) == tree(0, round_idx=1)
        assert store.get(1, 0) is None


def test_putting_a_stored_tree_again_writes_nothing(tmp_path):
    # The CLI stores each tree as it finishes; the runner puts the round's trees again.
    path = tmp_path / "t.jsonl"
    with JsonlTreeStore(path, FINGERPRINT) as store:
        store.put(tree(0))
        store.put(tree(0))
    assert len(lines(path)) == 2


def test_other_settings_are_a_resume_mismatch_naming_the_keys(tmp_path):
    path = tmp_path / "t.jsonl"
    JsonlTreeStore(path, FINGERPRINT).close()
    other = {**FINGERPRINT, "model": "other", "settings": {"mode": "eager_adapt", "theta": 2.0}}
    with pytest.raises(ResumeMismatchError) as info:
        JsonlTreeStore(path, other)
    assert info.value.differing == ["model", "settings.theta"]  # the one setting, not the dict
    message = str(info.value)
    assert 'model: stored "m", now "other"' in message
    assert "settings.theta: stored 0.7, now 2.0" in message
    assert "settings.mode" not in message, "equal settings are not listed"
    assert "--output" in message and "drop --resume" in message


def test_check_resumable_reads_the_header_and_writes_nothing(tmp_path):
    path = tmp_path / "t.jsonl"
    check_resumable(path, FINGERPRINT)  # no file: nothing to refuse
    assert not path.exists()
    with JsonlTreeStore(path, FINGERPRINT) as store:
        store.put(tree(0))
    before = path.read_bytes()
    check_resumable(path, FINGERPRINT)
    with pytest.raises(ResumeMismatchError, match="settings.theta: stored 0.7, now 1.0"):
        check_resumable(path, {**FINGERPRINT, "settings": {"mode": "eager_adapt", "theta": 1.0}})
    assert path.read_bytes() == before


def test_start_over_replaces_the_file_with_a_new_header(tmp_path):
    path = tmp_path / "t.jsonl"
    with JsonlTreeStore(path, FINGERPRINT) as store:
        store.put(tree(0))
    other = {**FINGERPRINT, "model": "other"}
    with JsonlTreeStore(path, other, start_over=True) as store:
        assert len(store) == 0
    assert json.loads(lines(path)[0])["fingerprint"]["model"] == "other"
    assert len(lines(path)) == 1


def test_a_fingerprint_key_present_on_one_side_only_differs(tmp_path):
    path = tmp_path / "t.jsonl"
    JsonlTreeStore(path, FINGERPRINT).close()
    with pytest.raises(ResumeMismatchError, match="limit"):
        JsonlTreeStore(path, {**FINGERPRINT, "limit": 3})


def test_tuples_and_lists_in_the_fingerprint_compare_equal(tmp_path):
    path = tmp_path / "t.jsonl"
    JsonlTreeStore(path, {"stop": ("a", "b")}).close()
    JsonlTreeStore(path, {"stop": ["a", "b"]}).close()


def test_a_half_written_last_line_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "t.jsonl"
    with JsonlTreeStore(path, FINGERPRINT) as store:
        store.put(tree(0))
        store.put(tree(1))
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # a crash in the middle of writing tree 1
    with pytest.warns(RuntimeWarning, match="half-written"):
        store = JsonlTreeStore(path, FINGERPRINT)
    with store:
        assert store.get(0, 0) == tree(0) and store.get(1, 0) is None
        store.put(tree(1))  # the next append starts on a clean line
    with JsonlTreeStore(path, FINGERPRINT) as store:
        assert store.get(1, 0) == tree(1)


def test_a_half_written_header_starts_the_file_over(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"format": "eager-ev')
    with pytest.warns(RuntimeWarning):
        store = JsonlTreeStore(path, FINGERPRINT)
    with store:
        store.put(tree(0))
    with JsonlTreeStore(path, FINGERPRINT) as store:
        assert len(store) == 1


def test_a_damaged_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "t.jsonl"
    with JsonlTreeStore(path, FINGERPRINT) as store:
        store.put(tree(0))
        store.put(tree(1))
    rows = lines(path)
    rows[1] = rows[1][:20]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(StoreError, match=":2 is not a stored tree"):
        JsonlTreeStore(path, FINGERPRINT)


def test_a_file_that_is_no_tree_file_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"problem": "1+1", "answer": "2"}\n')
    with pytest.raises(StoreError, match="not an eager-eval tree file"):
        JsonlTreeStore(path, FINGERPRINT)


# --- resume through the runner ----------------------------------------------------------------

PROMPTS = [PromptInput((i, 3 * i)) for i in range(1, 6)]
CONFIG = EagerConfig(mode="eager_adapt", theta=1.9, max_seqs=3, percentile=None, think_end=None,
                     max_new_tokens=30, seed=5)


def shape(result):
    return [[(t.round, t.cap, t.theta, t.hit_cap,
              [(s.index, s.parent, s.fork_position, s.seed, tuple(s.tokens), s.finish_reason)
               for s in t.sequences],
              [(e.position, e.parent, e.child, e.parent_token, e.child_token) for e in t.branch_events])
             for t in p.trees] for p in result.prompts]


class Interrupt:
    """on_tree_done as the CLI wires it: store the tree, then Ctrl-C after `after` trees."""

    def __init__(self, store: JsonlTreeStore, after: int):
        self.store, self.after, self.seen = store, after, 0

    def __call__(self, tree: TreeResult) -> None:
        self.store.put(tree)
        self.seen += 1
        if self.seen == self.after:
            raise KeyboardInterrupt


@pytest.mark.parametrize("after", [2, 6], ids=["in-round-0", "in-a-reallocation-round"])
def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, after):
    reference = run(PROMPTS, ScriptedBackend(hashed_script(5), greedy=False), CONFIG)
    assert len(reference.rounds) == 3 and len(reference.rounds[0].allotments) == 5
    path = tmp_path / "trees.jsonl"

    store = JsonlTreeStore(path, FINGERPRINT)
    with pytest.raises(KeyboardInterrupt):
        run(PROMPTS, ScriptedBackend(hashed_script(5), greedy=False), CONFIG, store=store,
            on_tree_done=Interrupt(store, after=after))
    store.close()
    assert len(lines(path)) == 1 + after

    store = JsonlTreeStore(path, FINGERPRINT)
    done_before = {(t.prompt_idx, t.round) for t in store}
    regenerated = []
    backend = ScriptedBackend(hashed_script(5), greedy=False)
    resumed = run(PROMPTS, backend, CONFIG, store=store,
                  on_tree_done=lambda t: (store.put(t), regenerated.append((t.prompt_idx, t.round))))
    store.close()

    assert shape(resumed) == shape(reference)
    assert not done_before & set(regenerated)  # finished trees were not generated again
    n_trees = sum(len(p.trees) for p in reference.prompts)
    assert len(regenerated) == n_trees - after
    roots = {f.parent for f in backend.forks} | set(backend.finished)
    assert len(roots) < reference.n_sequences  # fewer sequences decoded than a full run


def test_a_finished_run_resumes_without_decoding_anything(tmp_path):
    path = tmp_path / "trees.jsonl"
    with JsonlTreeStore(path, FINGERPRINT) as store:
        first = run(PROMPTS, ScriptedBackend(hashed_script(5), greedy=False), CONFIG, store=store)
    backend = ScriptedBackend(hashed_script(5), greedy=False)
    with JsonlTreeStore(path, FINGERPRINT) as store:
        again = run(PROMPTS, backend, CONFIG, store=store)
    assert shape(again) == shape(first)
    assert backend.steps_taken == 0


@pytest.mark.parametrize("code", [28, 30], ids=["ENOSPC", "EROFS"])
def test_a_refused_write_is_cut_back_and_one_error_keeping_the_trees_before(tmp_path, monkeypatch,
                                                                          code):
    """The OS writes half a line, then refuses the rest: the half is cut off the file, the
    error names the file, the reason and the trees kept, and a reopened store resumes."""
    import errno
    import os

    from eager_eval.common.files import WriteError
    from eager_eval.pipeline import store as store_module

    path = tmp_path / "t.jsonl"
    store = JsonlTreeStore(path, FINGERPRINT, again="rerun with --resume")
    store.put(tree(0))
    real_write = os.write

    def half_then_refuse(fd, data):
        if len(data) > 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(store_module.os, "write", half_then_refuse)
    with pytest.raises(WriteError) as err:
        store.put(tree(1))
    monkeypatch.undo()
    store.close()
    assert err.value.errno == code and isinstance(err.value, OSError)
    assert str(err.value) == (
        f"cannot save a finished tree to {path}: {os.strerror(code)}; "
        + {errno.ENOSPC: "free space on that disk",
           errno.EROFS: "the file system is read-only (remounted so after a disk error?); fix "
                        "or remount it, or use another directory"}[code]
        + "; the trees saved before it (1) are kept there, and not generated again when you "
          "rerun with --resume")
    assert len(lines(path)) == 2 and json.loads(lines(path)[1])  # header, tree 0: whole
    with JsonlTreeStore(path, FINGERPRINT) as again:
        assert again.get(0, 0) == tree(0) and again.get(1, 0) is None
