"""How many CPU threads torch gets when the user does not say (`--threads`).

torch's own default is one thread per physical core, and its OpenMP threads spin while they
wait. On a machine other jobs keep busy that is the worst choice: measured on a 2-core VM at a
load average of ~10, a decode step took 3.0 s with torch's 2 threads and 0.42 s with 1. On an
idle machine every core helps. So the default takes the CPUs this process may run on, less the
ones other processes already keep busy (the 1-minute load average, rounded), capped by torch's
own default and never below 1. `--threads N` overrides it (and makes a run's speed, though not
its results, independent of the load).
"""

from __future__ import annotations

import os


def default_threads(torch_default: int, *, cpus: int | None = None,
                    load: float | None = None) -> int:
    """Threads for a CPU run: free CPUs (`cpus` - round(`load`)), at most `torch_default`.

    `cpus` defaults to the CPUs this process may use (its affinity mask), `load` to the
    1-minute load average (0 where the platform has none).
    """
    if cpus is None:
        cpus = _usable_cpus()
    if load is None:
        load = _load_average()
    free = cpus - round(load)
    return max(1, min(torch_default, free))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity mask
        return os.cpu_count() or 1


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return 0.0
