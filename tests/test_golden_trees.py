"""The runner builds the trees it built before its scale rewrite, bit for bit (golden_runs.py)."""

from __future__ import annotations

import json

import pytest
from golden_runs import FIXTURE, cases, digest, load_smollm2_tokenizer, smollm2_cases
from support import needs_smollm2

GOLDEN = json.loads(FIXTURE.read_text())
FAST = cases()


@pytest.mark.parametrize("name", sorted(FAST))
def test_trees_match_the_golden_digest(name):
    assert digest(FAST[name]()) == GOLDEN[name]


@pytest.mark.slow
@needs_smollm2
def test_trees_with_the_real_tokenizer_match_the_golden_digest():
    for name, make in smollm2_cases(load_smollm2_tokenizer()).items():
        assert digest(make()) == GOLDEN[name], name
