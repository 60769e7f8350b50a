"""Inspect logs for the report: the log's EAGer metrics as one `Run`, and each sample's
`record.PromptRecord`, which the eager provider writes as the sample output's metadata.

Settings: GenerateConfig, then the -M model args, then the settings the record holds (what
actually ran) win. A record the provider could not grade (no target reached it) is graded here
from the sample's target, once; logs written before the record existed (version 1: statistics
in the metadata, the sequences as choices) are read too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from eager_eval.pipeline.record import PromptRecord, is_record, pool_from_dict
from eager_eval.report.reading import (
    DEFAULT_METHOD,
    UnreadableRun,
    fill_from_records,
    not_a_number,
)
from eager_eval.report.runs import (
    Run,
    as_number,
    is_unrecorded,
    metric_key,
    normalise_method,
    normalise_settings,
)

_LETTER = re.compile(r"^\(?[A-Z]\)?$")

_GENERATE_SETTINGS = (("temperature", "temperature"), ("seed", "seed"),
                      ("max_new_tokens", "max_tokens"), ("top_p", "top_p"), ("top_k", "top_k"))
"""EagerConfig name -> GenerateConfig name."""


def read_inspect(path: Path) -> tuple[list[Run], list[str], set[str]]:
    """The log's one run: its metrics and each sample's record."""
    log = _read_log(path)
    warnings: list[str] = []
    spec = log.eval
    provider, _, name = spec.model.partition("/")
    settings: dict[str, Any] = {}
    generate = spec.model_generate_config
    for ours, theirs in _GENERATE_SETTINGS:
        value = getattr(generate, theirs, None) if generate is not None else None
        if value is not None:
            settings[ours] = value
    settings.update(normalise_settings(dict(spec.model_args or {})))
    samples = [s for s in log.samples or [] if s.output is not None and s.output.choices]
    records = [r for r in (_sample_record(s) for s in samples) if r is not None]
    if records:
        settings.update(normalise_settings(records[0].settings))
    method = settings.pop("mode", None)
    if method is None:
        method = DEFAULT_METHOD
        if provider != "eager":
            warnings.append(f"model {spec.model!r} records no EAGer mode; "
                            f"assuming {DEFAULT_METHOD} (EagerConfig's default)")
    metrics = _metrics(log, warnings)
    if "n_prompts" not in metrics and log.results.completed_samples:
        epochs = (spec.config.epochs if spec.config is not None else None) or 1
        metrics["n_prompts"] = log.results.completed_samples // epochs
    run = Run("inspect", path, name if provider == "eager" and name else spec.model,
              normalise_method(method), spec.task.rsplit("@", 1)[-1], settings, metrics,
              records=records or None)
    fill_from_records(run, warnings)
    return [run], warnings, set()


def _read_log(path: Path) -> Any:
    try:
        from inspect_ai.log import read_eval_log
    except ImportError:
        raise UnreadableRun("an Inspect log, but inspect_ai is not installed "
                            "(pip install inspect-ai)") from None
    try:
        log = read_eval_log(str(path))
    except Exception as err:  # noqa: BLE001 (zip, JSON and schema errors all mean unreadable)
        raise UnreadableRun(f"cannot read Inspect log ({type(err).__name__}: {err})") from None
    if log.status != "success":
        raise UnreadableRun(f"Inspect log status is {log.status!r}, not 'success'")
    if log.results is None or not log.results.scores:
        raise UnreadableRun("Inspect log has no scores")
    return log


def _metrics(log: Any, warnings: list[str]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for score in log.results.scores:
        for metric_name, metric in score.metrics.items():
            key = metric_key(metric_name.rsplit("/", 1)[-1])
            value = as_number(metric.value)
            if key is None or is_unrecorded(key, metric.value):
                continue
            if value is None:
                not_a_number(f"{score.name}/{metric_name}", metric.value, warnings)
                continue
            if key in metrics and metrics[key] != value:
                warnings.append(f"{key}: scorers disagree ({metrics[key]:g} vs {value:g}); "
                                f"using the first ({score.name} ignored)")
                continue
            metrics[key] = value
    if not metrics:
        raise UnreadableRun("Inspect log has none of the EAGer metrics (pass_at_k, cons_at_k, "
                            "tokens_generated, ...)")
    return metrics


def _sample_record(sample: Any) -> PromptRecord | None:
    """The sample's record (graded here, once, if the provider could not)."""
    metadata = sample.output.metadata or {}
    if is_record(metadata):
        record = PromptRecord.from_dict(metadata)
    elif "branch_events" in metadata or "pool" in metadata:  # version 1: sequences as choices
        record = PromptRecord.from_dict({
            "sequences": [{**(c.message.metadata or {}), "text": c.message.text}
                          for c in sample.output.choices],
            "branch_events": metadata.get("branch_events"), "trees": metadata.get("rounds")})
        record.index = _sequence_key(metadata)
        record.settings = dict(metadata.get("settings") or {})
        record.pool = pool_from_dict(metadata.get("pool"))  # the old pool reads like the new
        for seq, choice in zip(record.sequences, sample.output.choices):
            seq.index = int((choice.message.metadata or {}).get("sequence", seq.index))
    else:
        return None
    target = sample.target if isinstance(sample.target, str) else ",".join(sample.target)
    record.origin.setdefault("sample", str(sample.id))
    record.origin.setdefault("epoch", sample.epoch)
    record.id = str(sample.id) if record.id in ("", "None") else record.id
    if record.prompt is None:
        record.prompt = sample.input if isinstance(sample.input, str) else next(
            (m.text for m in reversed(sample.input) if m.role == "user"), None)
    if not record.is_graded and target:
        declared = next((s.metadata for s in (sample.scores or {}).values()
                         if isinstance(s.metadata, dict) and "answer_type" in s.metadata), {})
        answer_type = record.answer_type or declared.get("answer_type") or (
            "choice" if _LETTER.match(target.strip()) else "math")
        record.grade(target, str(answer_type), n_choices=int(declared.get("n_choices", 4)))
    return record


def _sequence_key(metadata: dict) -> int:
    pool = metadata.get("pool")
    index = as_number(pool.get("index")) if isinstance(pool, dict) else None
    return int(index) if index is not None else 0


__all__ = ["read_inspect"]
