"""Distributions and scripts for the scripted engine, shared by the core's tests.

The scripts themselves ship with the engine (`eager_eval.engines.scripted`); this module adds
what only tests need."""

from __future__ import annotations

import math

from eager_eval.engines.scripted import (  # noqa: F401 (re-exported for the tests)
    EOS,
    CharTokenizer,
    Distribution,
    flat,
    hashed_script,
    mixed_script,
    peaked,
)


def entropy_of(dist: Distribution) -> float:
    ps = [math.exp(lp) for _, lp in dist]
    z = sum(ps)
    return -sum(p / z * math.log(p / z) for p in ps)
