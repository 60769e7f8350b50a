"""The same tree whatever the batch: the HF backend gives a row the same bits whatever other
rows share its forwards (other trees, max_rows, admission order, holes, thread count, a resume).

First the kernel facts the design rests on (hf_slots.py's docstring), measured here on this
machine's torch: if one stops holding, these tests say which. Then the backend: a tree's every
reported number (tokens, top-K log-probabilities, entropies) alone and among others, and the
runner's records (forks, entropies, thresholds) at max_rows 1, 4 and 64 and after a resume.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_hf_backend import FakeTokenizer, tiny_model  # noqa: E402

from eager_eval.core.backend import Fork, NewTree, Root  # noqa: E402
from eager_eval.core.config import EagerConfig  # noqa: E402
from eager_eval.core.runner import PromptInput, run  # noqa: E402
from eager_eval.engines.hf import HFBackend  # noqa: E402
from eager_eval.engines.hf_slots import COLUMN_ALIGN, ROW_BLOCK, slot_attention  # noqa: E402
from support import one_torch_thread  # noqa: E402,F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def threads():
    """Set torch's threads inside a test (restored after)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


# --- the kernels --------------------------------------------------------------------------------


@pytest.mark.parametrize("k,n", [(32, 96), (576, 1536), (1536, 576)])
def test_a_linear_layer_gives_a_row_the_same_bits_at_every_row_block_multiple(threads, k, n):
    torch.manual_seed(0)
    weight, x = torch.randn(n, k), torch.randn(8 * ROW_BLOCK, k)
    for count in (1, 2):
        threads(count)
        full = torch.nn.functional.linear(x, weight)
        for rows in range(ROW_BLOCK, len(x) + 1, ROW_BLOCK):
            assert torch.equal(torch.nn.functional.linear(x[:rows], weight), full[:rows]), (
                count, rows)
        moved = torch.nn.functional.linear(x.roll(3, 0), weight).roll(-3, 0)  # other positions
        assert torch.equal(moved, full)


def test_slot_attention_gives_a_row_the_same_bits_at_any_width_batch_and_thread_count(threads):
    torch.manual_seed(0)
    kv_heads, group, dim, columns = 3, 3, 16, 1024
    keys, values = torch.randn(24, kv_heads, columns, dim), torch.randn(24, kv_heads, columns, dim)
    query = torch.randn(24, kv_heads * group, 1, dim)
    length = 150  # row 0 sees columns 0..149

    def row0(rows: int, width: int) -> torch.Tensor:
        lengths = torch.tensor([length] + [(37 * i) % width + 1 for i in range(1, rows)])
        mask = (torch.arange(width)[None, :] < lengths[:, None])[:, None, None, :]
        out, _ = slot_attention(None, query[:rows], keys[:rows, :, :width],
                                values[:rows, :, :width], mask, scaling=dim**-0.5)
        return out[0]

    threads(1)
    reference = row0(1, 192)
    for count in (1, 2):
        threads(count)
        for rows in (1, 5, 8, 24):
            for width in range(192, columns + 1, COLUMN_ALIGN):
                assert torch.equal(row0(rows, width), reference), (count, rows, width)


# --- the backend --------------------------------------------------------------------------------

TARGET = (9, 14, 22, 31, 8, 40, 5, 61)
COMPANIONS = [(2, 17), (5, 60, 61, 62, 11, 40, 8, 3, 1, 4, 1, 5, 9, 2, 6), (4, 4, 90, 33),
              tuple(range(1, 70)), (7,)]


def tree_records(llama, *, companions=(), max_rows=64, late=False, row_block=ROW_BLOCK):
    """Every TokenStep of the target tree (ids 1000..; forks at fixed positions, sample policy;
    20 tokens) as exact numbers, next to companion trees that fork and end at their own pace."""
    backend = HFBackend(llama, FakeTokenizer(), entropy_k=12, temperature=1.0,
                        max_rows=max_rows, row_block=row_block)
    others = [NewTree(i, prompt, (Root(100 * (i + 1), 7 + i), Root(100 * (i + 1) + 1, 8 + i)),
                      40, cap=4) for i, prompt in enumerate(companions)]
    target = NewTree(99, TARGET, (Root(1000, 4242),), 40, cap=5)
    first, rest = (others[:2], others[2:]) if late else (others, [])
    backend.add([*first, target])
    records, next_child = [], {}
    t = 0
    while backend.has_unfinished():
        if t == 3 and rest:
            backend.add(rest)
        t += 1
        reported = backend.step()
        for s in reported:
            if s.seq_id >= 1000:
                records.append((s.seq_id, s.position, s.token, s.topk_ids, s.topk_logprobs,
                                s.entropy))
        for s in reported:
            tree = s.seq_id // 100 if s.seq_id < 1000 else 10
            first = 1 if tree == 10 else 2  # a companion's roots are 100 * tree + 0 and 1
            if s.position in (2, 5, 9) and s.seq_id % 100 == 0 and next_child.get(tree, first) < 4:
                child = 100 * tree + next_child.get(tree, first)
                next_child[tree] = next_child.get(tree, first) + 1
                backend.fork(Fork(s.seq_id, child, s.position, s.token, None, 31 * child))
            elif s.position >= (19 if s.seq_id >= 1000 else 6 + s.seq_id % 5):
                backend.finish(s.seq_id)  # companions end early: holes, moves, admissions
    return records


def test_a_tree_reports_the_same_bits_alone_and_among_other_trees(llama):
    alone = tree_records(llama)
    assert len(alone) > 60 and len({r[0] for r in alone}) == 4 and alone[-1][1] == 19  # the target forked 3 times
    assert tree_records(llama, companions=COMPANIONS) == alone
    assert tree_records(llama, companions=COMPANIONS, late=True) == alone
    assert tree_records(llama, companions=COMPANIONS[::-1]) == alone


@pytest.mark.parametrize("max_rows", [1, 4, 11])
def test_a_tree_reports_the_same_bits_at_any_max_rows(llama, max_rows):
    assert tree_records(llama, companions=COMPANIONS, max_rows=max_rows) == tree_records(llama)


def test_a_tree_reports_the_same_bits_at_any_thread_count(llama, threads):
    threads(1)
    one = tree_records(llama, companions=COMPANIONS)
    threads(2)
    assert tree_records(llama, companions=COMPANIONS[1:]) == one


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


# --- the runner's records ---------------------------------------------------------------------

PROMPTS = [PromptInput(p) for p in [TARGET, *COMPANIONS]]


class DictStore:
    """A TreeStore holding some finished trees: the runner grows only the others (a resume)."""

    def __init__(self, trees):
        self.trees = {(t.prompt_idx, t.round): t for t in trees}

    def get(self, prompt_idx, round_idx):
        return self.trees.get((prompt_idx, round_idx))

    def put(self, tree):
        pass


def records(result):
    """Every tree as the records hold it: sequences, forks with entropy and threshold."""
    return [[t.to_dict() for t in p.trees] for p in result.prompts]


@pytest.mark.parametrize("mode", ["eager_init", "eager_adapt"])
def test_the_runner_builds_bitwise_the_same_records_whatever_the_batch(llama, mode):
    config = EagerConfig(mode=mode, theta=1.0, max_seqs=4, percentile=80.0, entropy_k=20,
                         think_end=None, temperature=1.0, max_new_tokens=16, seed=11, window=4)

    def grown(max_rows, store=None):
        backend = HFBackend(llama, FakeTokenizer(), config.sampling, max_rows=max_rows)
        return run(PROMPTS, backend, config, store=store)

    reference = grown(64)
    expected = records(reference)
    assert sum(len(p.branch_events) for p in reference.prompts) >= 4  # it branches
    for max_rows in (1, 4):
        assert records(grown(max_rows)) == expected, max_rows
    every_tree = [t for p in reference.prompts for t in p.trees]
    for kept in ([], every_tree[:3], every_tree[1::2]):  # a resume: the others grow again
        assert records(grown(64, DictStore(kept))) == expected


# --- through the CLI: a resume at another max_rows ---------------------------------------------


def test_a_run_killed_and_resumed_at_other_max_rows_writes_the_same_records(tmp_path, monkeypatch):
    """The tiny word model, widened (its entropies spread 1.59-1.61 nats, theta 1.6: forks
    decided by ~1e-3 and less): uninterrupted at --max-rows 64, against killed after two trees
    at --max-rows 3 and resumed at auto. The records are byte-identical; the tree lines the
    same. (Without the row blocks, `row_block=1`, the records differ.)"""
    from support import save_tiny_word_model
    from test_kill_resume import KillAtLine, Killed, assert_same_run, run_cli

    model = save_tiny_word_model(tmp_path / "model")
    wider(model)
    data = tmp_path / "choice.csv"
    data.write_text("id,question,A,B,C,D,answer\n" + "".join(
        f"c{i},which is {i}?,one,two,three,four {'ab'[i % 2]},{'ABCD'[i % 4]}\n" for i in range(6)))

    def args(out, max_rows, *extra):
        return ["run", "--model", str(model), "--data", str(data), "--answer-type", "choice",
                "--output", str(out), "--mode", "eager_adapt", "--max-seqs", "3",
                "--max-new-tokens", "12", "--entropy-k", "5", "--theta", "1.6",
                "--percentile", "none", "--temperature", "0.7", "--entropy-source", "processed",
                "--threads", "1", "--no-progress", "--max-rows", max_rows, *extra]

    reference = tmp_path / "reference"
    assert run_cli(args(reference, "64")) == 0
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        KillAtLine(patch, 2)
        with pytest.raises(Killed):
            run_cli(args(out, "3"))
    assert run_cli(args(out, "auto", "--resume")) == 0
    assert_same_run(out, reference, "eager_adapt")
    records = [json.loads(line) for line in (reference / "eager_adapt.jsonl").read_text().splitlines()]
    assert sum(len(r["forks"]) for r in records) > 0
    margins = [t["margin"] for r in records for t in r["trees"] if t["margin"] is not None]
    assert min(margins) < 0.01  # decisions this close to theta came out the same


def wider(directory):
    """The word model at a width where batch composition reaches a row's last bits: 2 layers,
    hidden 64 (the 16-wide model's matmuls happen to agree across row counts anyway)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(directory)
    config.update({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16})
    torch.manual_seed(1)
    LlamaForCausalLM(config).save_pretrained(directory)
