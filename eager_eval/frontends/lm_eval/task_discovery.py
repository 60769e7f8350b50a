"""The tasks lm-eval is about to build, read from its evaluator's frame.

lm-eval 0.4.13 tells a model nothing about the tasks and builds the model first, so a missing
data file (the GPQA CSV offline) showed only after the weights had loaded. `simple_evaluate`
holds the task names and its TaskManager in local variables (`tasks`, `task_manager`) while it
builds the model: this module reads them there. That is lm-eval's private detail, kept here
alone; tests/test_lm_eval_task_discovery.py fails loudly when a new lm-eval renames them.
Outside `simple_evaluate` (a model built in Python) it finds nothing and checks nothing.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

EVALUATOR = "lm_eval.evaluator"
FUNCTION = "simple_evaluate"
LOCALS = ("tasks", "task_manager")
"""The names of `simple_evaluate`'s locals read here (lm-eval 0.4.13)."""


def requested_custom_datasets() -> list[str]:
    """The `custom_dataset` values of the tasks lm-eval is about to build.

    lm-eval 0.4.13 tells a model nothing about the tasks and builds it first, so a missing data
    file showed only after the model had loaded. `simple_evaluate` holds the task names and the
    TaskManager in its frame while it builds the model: read them there. Outside
    `simple_evaluate` (a model built in Python) this finds nothing and checks nothing."""
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == FUNCTION
                                     and frame.f_globals.get("__name__") == EVALUATOR):
        frame = frame.f_back
    if frame is None:
        return []
    tasks, manager = (frame.f_locals.get(name) for name in LOCALS)
    index = getattr(manager, "task_index", None)
    if not isinstance(index, Mapping) or not tasks:
        return []
    names = [tasks] if isinstance(tasks, str) else [t for t in tasks if isinstance(t, str)]
    return [str(entry.cfg["custom_dataset"]) for entry in _task_entries(names, index)
            if isinstance(entry.cfg, Mapping) and entry.cfg.get("custom_dataset")]


def _task_entries(names: Sequence[str], index: Mapping[str, Any], depth: int = 0) -> list[Any]:
    """Index entries of the tasks named; a tag or a group stands for its member tasks."""
    entries = []
    for name in names:
        entry = index.get(name)
        kind = getattr(getattr(entry, "kind", None), "name", None)
        if kind == "TASK":
            entries.append(entry)
        elif depth < 3:  # groups of groups, never a cycle
            if kind == "TAG":
                members = [e.name for e in index.values() if name in (e.tags or ())]
            else:
                members = (entry.cfg or {}).get("task") if kind == "GROUP" else None
            if isinstance(members, list):
                entries += _task_entries([m for m in members if isinstance(m, str)], index,
                                         depth + 1)
    return entries


__all__ = ["requested_custom_datasets", "EVALUATOR", "FUNCTION", "LOCALS"]
