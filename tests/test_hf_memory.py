"""The HF backend and memory: max_rows=auto, and out-of-memory errors survived with the same trees.

Out-of-memory errors are injected into the model's forward (`torch.OutOfMemoryError`, as CUDA
raises it) at a chosen call; free memory is faked where a GPU's is needed. The front ends'
paths (CLI, lm-eval, Inspect) are in test_hf_oom_frontends.py.
"""

from __future__ import annotations

import functools

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_hf_backend import FakeTokenizer, tiny_model  # noqa: E402
from test_hf_invariance import PROMPTS, records  # noqa: E402

from eager_eval.core.backend import NewTree, Root  # noqa: E402
from eager_eval.core.config import EagerConfig  # noqa: E402
from eager_eval.core.runner import run  # noqa: E402
from eager_eval.engines import hf_memory  # noqa: E402
from eager_eval.engines.hf import HFBackend  # noqa: E402
from eager_eval.engines.hf_engine import HFEngine  # noqa: E402
from eager_eval.engines.hf_memory import (  # noqa: E402
    BatchStats,
    MemoryBudgetError,
    is_out_of_memory,
    kv_bytes_per_token,
)
from support import one_torch_thread  # noqa: E402,F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = EagerConfig(mode="eager_adapt", theta=1.0, max_seqs=4, percentile=80.0, entropy_k=20,
                     think_end=None, temperature=1.0, max_new_tokens=16, seed=11, window=4)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


class InjectOOM:
    """Wraps `model.forward`: raises torch.OutOfMemoryError on the calls `when(n, rows, q)`
    accepts (n counts calls from 1; rows and q: input_ids' shape), `times` times at most."""

    def __init__(self, model, when, times: int = 1):
        self.model, self.when, self.left, self.calls, self.raised = model, when, times, 0, 0
        inner = model.forward

        @functools.wraps(inner)
        def forward(*args, **kwargs):
            self.calls += 1
            rows, q = kwargs["input_ids"].shape
            if self.left and self.when(self.calls, rows, q):
                self.left -= 1
                self.raised += 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB "
                                             "(injected by the test)")
            return inner(*args, **kwargs)

        model.forward = forward

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        del self.model.forward  # the class's forward again


@pytest.fixture(scope="module")
def clean(llama):
    """The records of an uninterrupted run, and the most rows one of its forwards took."""
    widest = []
    with InjectOOM(llama, lambda n, rows, q: widest.append(rows) and False):
        result = run(PROMPTS, HFBackend(llama, FakeTokenizer(), CONFIG.sampling), CONFIG)
    return records(result), max(widest)


def grown(llama, when, times=1, **backend_args):
    stats = BatchStats()
    backend = HFBackend(llama, FakeTokenizer(), CONFIG.sampling, stats=stats, **backend_args)
    with InjectOOM(llama, when, times) as injected:
        result = run(PROMPTS, backend, CONFIG)
    return records(result), backend, stats, injected


def test_an_oom_in_a_decode_forward_is_survived_with_the_same_trees(llama, clean, capsys):
    expected, widest = clean
    assert widest >= 16  # decode forwards of two row blocks or more: there is room to shrink
    got, backend, stats, injected = grown(llama, lambda n, rows, q: q == 1 and rows >= 16)
    assert injected.raised == 1 and stats.oom_recoveries == 1
    assert got == expected
    assert backend._forward_rows is not None and backend._forward_rows < widest
    assert "out of memory in a decode forward" in capsys.readouterr().err


def test_repeated_ooms_shrink_the_forwards_down_to_one_row_block(llama, clean):
    expected, _ = clean
    got, backend, stats, injected = grown(llama, lambda n, rows, q: q == 1 and rows > 8, times=50)
    assert got == expected and injected.raised == stats.oom_recoveries >= 1
    assert backend._forward_rows == 8


def test_an_oom_in_a_prefill_puts_the_tree_back_in_the_queue(llama, clean):
    expected, _ = clean
    prefills = []

    def second_prefill(n, rows, q):
        prefills.append(q) if q > 1 else None
        return q > 1 and len(prefills) == 2  # the first tree is live by then

    got, backend, stats, injected = grown(llama, second_prefill)
    assert injected.raised == 1 and stats.oom_recoveries == 1 and got == expected
    assert backend.max_rows < 64  # no more rows admitted than were live


def test_an_oom_in_the_sampling_step_samples_in_smaller_groups(llama, clean, monkeypatch):
    expected, _ = clean
    warp = HFBackend._warp
    left = [1]

    def failing_warp(self, logits):
        if left[0] and logits.shape[0] > 4:
            left[0] -= 1
            raise torch.OutOfMemoryError("injected")
        return warp(self, logits)

    monkeypatch.setattr(HFBackend, "_warp", failing_warp)
    got, backend, stats, _ = grown(llama, lambda *a: False)
    assert got == expected and stats.oom_recoveries == 1 and backend._sample_rows is not None


def test_an_oom_that_one_row_block_still_hits_after_a_retry_is_raised(llama):
    with pytest.raises(torch.OutOfMemoryError):
        grown(llama, lambda n, rows, q: q == 1, times=10_000)


def test_an_oom_at_one_row_block_is_retried_once(llama, clean):
    """A forward of one row block cannot shrink; freeing the allocator's cache may be enough."""
    expected, _ = clean
    got, backend, stats, injected = grown(llama, lambda n, rows, q: q == 1 and rows == 8, times=1)
    assert injected.raised == stats.oom_recoveries == 1 and got == expected


def test_an_oom_in_the_first_prefill_is_retried_once_then_raised(llama, clean):
    expected, _ = clean
    got, _, stats, _ = grown(llama, lambda n, rows, q: q > 1 and n == 1)
    assert got == expected and stats.oom_recoveries == 1
    with pytest.raises(torch.OutOfMemoryError):
        grown(llama, lambda n, rows, q: q > 1, times=10_000)


def test_other_errors_in_a_forward_are_not_taken_for_memory(llama):
    stats = BatchStats()
    backend = HFBackend(llama, FakeTokenizer(), CONFIG.sampling, stats=stats)
    backend.add([NewTree(0, (1, 2, 3), (Root(0, 1), Root(1, 2)), 8)])
    backend.step()
    inner = llama.forward
    llama.forward = functools.wraps(inner)(lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("shape mismatch")))
    try:
        with pytest.raises(RuntimeError, match="shape mismatch"):
            backend.step()
    finally:
        del llama.forward
    assert stats.oom_recoveries == 0


def test_out_of_memory_is_told_apart_from_other_runtime_errors():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: "
                                         "can't allocate memory: you tried to allocate 8 bytes"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


# --- max_rows=auto -------------------------------------------------------------------------------


def test_kv_bytes_per_token_is_layers_kv_heads_head_dim_keys_and_values(llama):
    # 2 layers x 2 KV heads x head dim 32/4 = 8 x 2 (keys, values) x 4 bytes
    assert kv_bytes_per_token(llama.config, 4) == 2 * 2 * 8 * 2 * 4
    qwen = tiny_model("qwen3")  # head_dim given apart from hidden_size / heads
    assert kv_bytes_per_token(qwen.config, 2) == 2 * 2 * 8 * 2 * 2


def row_bytes(model, columns):
    """One row's share: its keys and values at `columns` columns, its vocabulary buffers."""
    return columns * kv_bytes_per_token(model.config, 4) + hf_memory.ROW_BUFFERS * 4 * 96


def test_auto_sizes_the_batch_from_the_available_ram(llama, monkeypatch, capsys):
    # a prompt of 40 + 64 new tokens = 104 columns, 128 once aligned like the cache's
    monkeypatch.setattr(hf_memory, "available_ram", lambda: 2 * 13 * row_bytes(llama, 128))
    stats = BatchStats()
    backend = HFBackend(llama, FakeTokenizer(), max_rows="auto", stats=stats)
    backend.add([NewTree(0, (5,) * 40, (Root(0, 1),), 64, cap=4)])
    assert backend.max_rows == stats.max_rows == 13  # the CPU plans for half the free RAM
    assert "max_rows=auto: 13 rows" in capsys.readouterr().err
    backend.add([NewTree(1, (5,) * 100, (Root(1, 1),), 64, cap=4)])  # a longer row: fewer
    assert backend.max_rows == 2 * 13 * 128 // 192 // 2 == 8
    monkeypatch.setattr(hf_memory, "available_ram", lambda: 10**12)
    roomy = HFBackend(llama, FakeTokenizer(), max_rows="auto")
    roomy.add([NewTree(0, (5,) * 40, (Root(0, 1),), 64, cap=4)])
    assert roomy.max_rows == hf_memory.CPU_ROW_CAP


def test_auto_that_cannot_hold_one_tree_is_one_clear_error(llama, monkeypatch):
    monkeypatch.setattr(hf_memory, "available_ram", lambda: 4 * 2**20)  # 2 MiB planned for
    backend = HFBackend(llama, FakeTokenizer(), max_rows="auto")
    with pytest.raises(MemoryBudgetError, match=r"room for \d+ rows of 4096 tokens .* one tree "
                       r"may grow to 32 sequences; lower max_seqs or max_new_tokens, .*--backend vllm"):
        backend.add([NewTree(0, (5,) * 96, (Root(0, 1),), 4000, cap=32)])
    assert not backend.has_unfinished()


def test_a_cuda_budget_counts_what_torch_caches_as_free(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 4 * 2**30)
    assert hf_memory.free_memory(torch.device("cuda", 0)) == 4 * 2**30

    class Model:
        config = tiny_model("llama").config

        def parameters(self):
            yield torch.zeros(1, dtype=torch.bfloat16)

    budget = hf_memory.measure_budget(Model(), torch.device("cuda", 0))
    assert budget.usable_bytes == int(4 * 2**30 * hf_memory.DEVICE_MEMORY_SHARE)
    assert budget.row_cap == hf_memory.DEVICE_ROW_CAP
    assert budget.kv_bytes_per_token == 2 * 2 * 8 * 2 * 2  # bf16


def test_max_rows_below_max_seqs_is_refused_by_the_engine(llama):
    engine = HFEngine("tiny", llama, FakeTokenizer(), max_rows=3)
    with pytest.raises(MemoryBudgetError, match=r"max_rows=3 cannot hold one tree: a prompt's "
                       r"tree may grow to max_seqs=4 sequences"):
        engine.new_backend(EagerConfig(max_seqs=4, entropy_k=20, think_end=None))
    assert isinstance(engine.new_backend(EagerConfig(max_seqs=3, entropy_k=20, think_end=None)),
                      HFBackend)


def test_engine_info_says_the_chosen_max_rows_and_the_recoveries(llama, monkeypatch):
    engine = HFEngine("tiny", llama, FakeTokenizer())
    assert engine.info()["max_rows"] == "auto" and engine.info()["oom_recoveries"] == 0
    monkeypatch.setattr(hf_memory, "available_ram", lambda: 10**12)
    backend = engine.new_backend(CONFIG)
    with InjectOOM(llama, lambda n, rows, q: q == 1 and rows >= 16):
        run(PROMPTS, backend, CONFIG)
    info = engine.info()
    assert info["max_rows_setting"] == "auto" and info["oom_recoveries"] == 1
    assert isinstance(info["max_rows"], int) and info["max_rows"] < hf_memory.CPU_ROW_CAP
