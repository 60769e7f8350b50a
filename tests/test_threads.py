"""Pins eager_eval/engines/threads.py: the CPU thread default of the CLI, and the --version flag."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eager_eval.engines.threads import default_threads


@pytest.mark.parametrize("cpus, load, torch_default, expected", [
    (2, 0.1, 2, 2),     # idle 2-core machine: both cores
    (2, 1.45, 2, 1),    # another job on one core: one thread
    (2, 10.0, 2, 1),    # overloaded: never below 1
    (16, 0.0, 8, 8),    # idle: at most torch's own default (physical cores)
    (16, 12.4, 8, 4),   # 12 busy of 16: the 4 free ones
])
def test_threads_are_the_free_cpus_capped_by_torch_default(cpus, load, torch_default, expected):
    assert default_threads(torch_default, cpus=cpus, load=load) == expected


def test_default_reads_this_machines_cpus_and_load(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert default_threads(64) == 3  # 4 usable CPUs, one kept busy by another process
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert default_threads(64) == 1


def test_version_flag_prints_the_installed_version():
    from importlib.metadata import version

    done = subprocess.run([sys.executable, "-m", "eager_eval.frontends.cli.main", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.strip() == f"eager-eval {version('eager-eval')}"
