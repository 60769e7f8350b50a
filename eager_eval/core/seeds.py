"""Per-sequence seeds (METHOD.md section 8), and the seeds of engine-side resubmissions.

Each sequence draws from its own seed, derived from (run seed, prompt, round, branch), so its
sampled tokens never depend on which other sequences exist or how an engine schedules them.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1

MAX_SEED = (1 << 63) - 1
"""The largest run seed: a signed 64-bit integer, what torch, numpy and vLLM take. The
derivation below masks a seed to 64 bits, so a larger one would silently run as another
(2**64 + 5 as 5): EagerConfig refuses it."""


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def hash64(x: int) -> int:
    """A 64-bit mix of `x` (splitmix64's finaliser): counter-based noise for simulators."""
    return _splitmix64(x)


def branch_seed(run_seed: int, prompt_idx: int, branch_idx: int, round_idx: int = 0) -> int:
    """63-bit seed of the `branch_idx`-th sequence created for a prompt in a round.

    63 bits because torch.Generator.manual_seed and vLLM take signed 64-bit seeds. Never
    reuse a parent's seed for its child: both would then draw the same noise.
    """
    h = _splitmix64(run_seed & _MASK64)
    for part in (prompt_idx, round_idx, branch_idx):
        h = _splitmix64(h ^ (part & _MASK64))
    return h >> 1


def unit_uniform(seed: int, position: int) -> float:
    """A uniform number in [0, 1) keyed by (seed, position): counter-based, order-free."""
    return (_splitmix64(_splitmix64(seed & _MASK64) ^ (position & _MASK64)) >> 11) / float(1 << 53)


def restart_seed(seed: int, restart: int) -> int:
    """63-bit seed of a sequence's `restart`-th resubmission (restart >= 1) to an engine.

    An engine that cannot rewind a request (vLLM) resubmits a sequence when a fork changes its
    token; reusing `seed` there would replay the noise of the sequence's first positions on
    engines that seed a request's generator at admission. A hash of (seed, restart), so a
    restart is as reproducible as the first submission. The 0x5EED0000 offset keeps the hash
    input away from the small positions unit_uniform hashes with the same seed.
    """
    return _splitmix64(_splitmix64(seed & _MASK64) ^ ((0x5EED0000 + restart) & _MASK64)) >> 1
