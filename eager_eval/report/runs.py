"""What the report knows about one run, whatever harness wrote it: the rows of the leaderboard.

A `Run` is one model x method x task with its settings and the task metrics of METHOD.md
section 5, under the names `metrics.TaskMetrics.to_dict` uses. A metric the source did not
record is absent from `Run.metrics`, never filled in: the table shows it as "—".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from eager_eval.core.config import NON_BRANCHING, EagerConfig
from eager_eval.pipeline.record import PoolRound, PromptRecord
from eager_eval.common.settings import is_number, number_or_none, parse_value, renamed_settings

HARNESSES = ("eager-eval", "lm-eval", "inspect")
"""Where a run's numbers came from: an `eager-eval run/demo` directory, an lm-eval results
JSON, an Inspect log."""

METHODS = ("full_parallel", "eager_init", "eager_adapt", "eager", "deepconf")
"""Modes in the order the table lists them (config.Mode values)."""

METHOD_LABELS = {
    "full_parallel": "Full Parallel",
    "eager_init": "EAGer-init",
    "eager_adapt": "EAGer-adapt",
    "eager": "EAGer",
    "deepconf": "DeepConf",
}

CONFIDENCE_STOP_LABEL = " + conf. stop"
"""Added to an EAGer method's label when its rounds stopped on confidence (confidence_stop)."""

METRIC_NAMES = (
    "n_prompts",
    "pass_at_k",
    "pass_at_1",
    "cons_at_k",
    "pass_rate",
    "tokens_generated",
    "tokens_in_outputs",
    "seqs_mean",
    "seqs_min",
    "seqs_max",
    "conf_cons_at_k",
    "top10_cons_at_k",
    "top90_cons_at_k",
)
"""`TaskMetrics.to_dict` names (the fixed-k "pass@{k}" entries are matched by `PASS_AT_K`)."""

OPTIONAL_METRICS = frozenset({"conf_cons_at_k", "top10_cons_at_k", "top90_cons_at_k"})
"""Metrics a source leaves unrecorded in the ordinary way (null or NaN: a run or model that
records no confidence): blank in the table, without a warning."""


def is_unrecorded(key: str | None, value: Any) -> bool:
    """An optional metric the source holds as null or NaN: not recorded, nothing to say."""
    return key in OPTIONAL_METRICS and (value is None or (
        isinstance(value, (float, str)) and str(value).strip().lower() in ("nan", "none", "null")))

METRIC_ALIASES = {"n_sequences": "seqs_mean"}
"""Names harness metrics may carry for the same quantity (a per-prompt mean of S_p)."""

PASS_AT_K = re.compile(r"^pass@(\d+)$")

MISSING = "—"
"""What the Markdown and HTML tables show for a value the source did not record."""

SHARED_SETTINGS = ("temperature", "top_p", "top_k", "max_new_tokens", "entropy_k", "n_prompts")
"""Settings every run of one model on one task should share, whatever the method, theta or M:
otherwise the runs are not on the same footing and the comparison is off."""

SHOWN_SETTINGS = ("theta", "max_seqs", "temperature", "seed", "max_new_tokens")


def metric_key(name: str) -> str | None:
    """Our metric name for a harness metric name, or None if it is not one of ours."""
    name = METRIC_ALIASES.get(name, name)
    if name in METRIC_NAMES or PASS_AT_K.match(name):
        return name
    return None


def normalise_method(value: Any) -> str:
    """'eager-adapt', 'EAGER_ADAPT', Mode.EAGER_ADAPT -> 'eager_adapt'."""
    text = getattr(value, "value", value)
    return str(text).strip().lower().replace("-", "_")


def normalise_settings(values: Any, warnings: list[str] | None = None,
                       where: str = "") -> dict[str, Any]:
    """Keep EagerConfig fields only, as Python values ('inf' -> inf, '0.6' -> 0.6), under
    their current names (an older output's `topk` is `entropy_k`).

    A value EagerConfig would refuse (theta 'abc', a temperature that is a mapping: a
    hand-edited file) is left out, shown as —, and said in `warnings` (prefixed by `where`);
    so is a `values` that is no mapping at all."""
    if not isinstance(values, Mapping):
        if warnings is not None and values is not None:
            warnings.append(f"{where}settings is {type(values).__name__} {short(values)}, not a "
                            f"mapping; its settings are shown as {MISSING}")
        return {}
    known = EagerConfig.field_names()
    out: dict[str, Any] = {}
    spelled = {str(key).replace("-", "_"): value for key, value in values.items()}
    for key, value in renamed_settings(spelled, warn=False).items():
        if key not in known:
            continue
        value = parse_value(getattr(value, "value", value))
        problem = setting_problem(key, value)
        if problem is not None:
            if warnings is not None:
                warnings.append(f"{where}settings.{key} is {short(value)}: {problem}; shown as "
                                f"{MISSING}")
            continue
        out[key] = normalise_method(value) if key == "mode" else value
    return out


def setting_problem(name: str, value: Any) -> str | None:
    """Why EagerConfig would refuse `value` for the setting `name` (None: it takes it). The
    one validation of every front end, so a report shows no setting a run could not have had."""
    try:
        EagerConfig.from_mapping({name: value})
    except (ValueError, TypeError, OverflowError) as err:
        return str(err)
    return None


def short(value: Any, limit: int = 40) -> str:
    """A value's repr, cut to `limit` characters (hand-edited files can hold anything)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class PromptStat:
    """One prompt of a run, as far as the source recorded it."""

    prompt_idx: int
    n_sequences: int | None
    """S_p: sequences this prompt ended with."""
    tokens_generated: int | None
    """This prompt's share of #T (shared prefixes once)."""


@dataclass(frozen=True)
class BranchPoint:
    """A granted fork: generated position and the entropy that triggered it."""

    position: int
    entropy: float
    threshold: float | None = None


@dataclass
class Run:
    """One model x method x task, read from one source file."""

    harness: str
    source: Path
    """The file the numbers were read from (results.json, results_*.json, the log)."""
    model: str
    method: str
    task: str
    settings: dict[str, Any] = field(default_factory=dict)
    """EagerConfig names with the values the run used (only those the source recorded)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Metric name -> value; absent = not recorded (shown as "—")."""
    records: list[PromptRecord] | None = None
    """Each prompt's record (docs/FORMAT.md) where the source keeps them, in prompt order."""
    pool_rounds: list[PoolRound] = field(default_factory=list)
    """The budget pool's rounds, where the source records them apart from the records."""
    stored_savings: float | None = None
    """Savings the source itself reported (eager-eval results.json), for a cross-check."""
    prompts_sha256: str | None = None
    """The hash of the prompts the run graded, where the source records it (eager-eval)."""

    @property
    def prompts(self) -> list[PromptStat] | None:
        """Per-prompt S_p and #T, from the records."""
        if not self.records:
            return None
        return [PromptStat(r.index, r.n_sequences, r.tokens_generated) for r in self.records]

    @property
    def branches(self) -> list[BranchPoint] | None:
        """Granted forks; None = the source keeps no records, [] = none happened."""
        if self.records is None:
            return None
        return [BranchPoint(f.position, f.entropy, f.threshold)
                for r in self.records for f in r.forks]

    @property
    def theta(self) -> float | None:
        """The entropy threshold, None for Full Parallel and DeepConf (they never branch)."""
        if self.method in NON_BRANCHING:
            return None
        return _as_float(self.settings.get("theta"))

    @property
    def max_seqs(self) -> int | None:
        value = self.settings.get("max_seqs")
        return int(value) if is_number(value) else None

    def setting(self, name: str) -> Any:
        """A setting or n_prompts (which lives in metrics), None if unknown."""
        if name == "n_prompts":
            return self.metrics.get("n_prompts")
        if name == "prompts":
            return self.prompts_sha256
        if name == "theta":
            return self.theta
        return self.settings.get(name)

    @property
    def confidence_stop(self) -> bool:
        """Its reallocation rounds stopped sequences on confidence (an EAGer option)."""
        return self.settings.get("confidence_stop") is True

    @property
    def method_label(self) -> str:
        """The method as tables name it: 'EAGer-adapt', 'EAGer-adapt + conf. stop', ..."""
        label = METHOD_LABELS.get(self.method, self.method)
        return label + CONFIDENCE_STOP_LABEL if self.confidence_stop else label

    @property
    def key(self) -> tuple:
        """What makes a leaderboard row: two runs with equal keys are the same experiment."""
        return (self.harness, self.model, self.method, self.confidence_stop, self.task,
                self.theta, self.max_seqs)

    @property
    def label(self) -> str:
        """Short name for plot legends."""
        parts = [self.model, self.method_label]
        if self.theta is not None:
            parts.append(f"θ={format_number(self.theta)}")
        if self.max_seqs is not None:
            parts.append(f"M={self.max_seqs}")
        return " ".join(parts)

    @property
    def method_order(self) -> int:
        return METHODS.index(self.method) if self.method in METHODS else len(METHODS)


def _as_float(value: Any) -> float | None:
    value = parse_value(value)
    return float(value) if is_number(value) else None


as_number = number_or_none
"""A metric value as a number; None for missing, None-valued, NaN or non-numeric."""


def format_number(value: float | int) -> str:
    """2.0 -> '2', 2.5 -> '2.5', inf -> '∞'."""
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}"
