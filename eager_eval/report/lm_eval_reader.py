"""lm-eval results for the report: one `Run` per task with EAGer metrics, and each doc's
`record.PromptRecord` from the samples file (`--log_samples`, the tasks in tasks/).

The method: the EAGer settings' mode (`get_model_info()["eager_eval"]["settings"]`, else a
`mode=` model arg, else EagerConfig's default) for the eager-hf/eager-vllm models. A stock model
(`--model hf`/`vllm`) on the tasks in tasks/ samples `repeats` independent sequences per prompt:
a Full Parallel run with M = repeats. #T is a total: an exact total wins (the adapters'
`get_model_info()["eager_eval"]["tasks"]`, the records, an lm-eval metric aggregated by a sum
such as tasks/'s `total`); a per-prompt mean (`aggregation: mean`) becomes mean x prompts; an
unknown aggregation leaves #T blank.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from eager_eval.pipeline.record import PromptRecord
from eager_eval.report.reading import (
    DEFAULT_METHOD,
    UnreadableRun,
    fill_from_records,
    not_a_number,
    read_jsonl,
    rounds_of,
)
from eager_eval.report.runs import (
    METRIC_ALIASES,
    Run,
    as_number,
    is_unrecorded,
    metric_key,
    normalise_method,
    normalise_settings,
)
from eager_eval.common.settings import parse_key_values

LM_EVAL_DATE = re.compile(r"_(\d{4}-\d{2}-\d{2}T[0-9.\-]+)$")
_LETTER = re.compile(r"^\(?[A-Z]\)?$")


def read_lm_eval(path: Path, data: dict) -> tuple[list[Run], list[str], set[str]]:
    """One run per task with EAGer metrics (see the module docstring)."""
    warnings: list[str] = []
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    model_args = parse_key_values(config.get("model_args"))
    eager = next((config[k] for k in ("eager_eval", "eager") if isinstance(config.get(k), dict)), {})
    is_eager_model = str(config.get("model", "")).startswith("eager") or bool(eager)
    settings = normalise_settings(model_args)
    settings.update(normalise_settings(eager.get("settings") or {}))  # what the adapter ran
    model = model_args.get("pretrained") or eager.get("model") or data.get("model_name") or config.get("model")
    if not model:
        raise UnreadableRun("lm-eval results name no model (no pretrained= in model_args)")
    method = settings.pop("mode", None)
    if method is None and is_eager_model:
        method = DEFAULT_METHOD
    date = LM_EVAL_DATE.search(path.stem)
    configs = data.get("configs") if isinstance(data.get("configs"), dict) else {}
    task_stats = eager.get("tasks") if isinstance(eager.get("tasks"), dict) else {}
    runs, claimed = [], set()
    for task, entry in (data.get("results") or {}).items():
        if not isinstance(entry, dict):
            continue
        task_config = configs.get(task) if isinstance(configs.get(task), dict) else {}
        metrics, means = _lm_eval_metrics(task, entry, task_config, warnings)
        if not metrics:
            continue  # a group header or a task without EAGer metrics
        run_settings = dict(settings)
        run_method = method
        if run_method is None:  # a stock model: independent samples, M = the task's repeats
            run_method = "full_parallel"
            run_settings.update(_stock_settings(task_config))
        stats = _task_stats(task_stats.get(task))
        rounds = stats.pop("rounds", [])
        run_settings.update({k: stats.pop(k) for k in _TASK_STAT_SETTINGS if k in stats})
        for name, value in stats.items():  # exact totals from the adapter win over aggregates
            metrics[name] = value
            means.discard(name)
        run = Run("lm-eval", path, str(model), normalise_method(run_method), str(task),
                  run_settings, metrics, pool_rounds=rounds_of(rounds, f"{task}: ", warnings))
        samples = path.parent / f"samples_{task}_{date.group(1)}.jsonl" if date else None
        if samples is not None and samples.resolve().parent != path.parent.resolve():
            warnings.append(f"{task}: the samples file of this task name lies outside "
                            f"{path.parent}; not read")  # a task named with '/' or '..'
            samples = None
        if samples is not None and samples.is_file():
            claimed.add(samples.name)
            rows = _dedupe_docs(read_jsonl(samples, warnings))
            records = [r for r in (_sample_record(row) for row in rows) if r is not None]
            run.records = records or None
        _totals_from_means(run, means, data, warnings)
        _drop_uncounted_tokens(run, warnings)
        fill_from_records(run, warnings)
        runs.append(run)
    if not runs:
        raise UnreadableRun("lm-eval results hold no task with EAGer metrics "
                            "(pass_at_k, cons_at_k, tokens_generated, ...)")
    return runs, warnings, claimed


def _sample_record(row: dict) -> PromptRecord | None:
    """The doc's record: the tasks' `all_sequences` filter puts it, as JSON text, in
    `filtered_resps`. A record nobody graded (a fallback, an older output) is graded here from
    the doc's answer, once; a graded one is read as it is."""
    resps = row.get("filtered_resps")
    first = resps[0] if isinstance(resps, list) and resps else None
    if isinstance(first, str) and first.startswith("{"):
        try:
            first = json.loads(first)
        except json.JSONDecodeError:
            return None
    if not isinstance(first, dict):
        return None
    try:
        record = PromptRecord.from_dict(first)
    except ValueError:
        return None
    doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
    doc_id = as_number(row.get("doc_id"))
    if doc_id is not None:
        record.index = int(doc_id)
        record.origin.setdefault("doc_id", int(doc_id))
    if record.id == str(record.index) and doc.get("id") is not None:
        record.id = str(doc["id"])
    record.prompt = record.prompt or doc.get("prompt") or doc.get("problem") or doc.get("question")
    target = record.target or doc.get("answer", row.get("target"))
    if target is not None and not record.is_graded:
        answer_type = record.answer_type or doc.get("eager_answer_type") or (
            "choice" if _LETTER.match(str(target).strip()) else "math")
        record.grade(str(target), str(answer_type))
    return record


_TASK_STAT_SETTINGS = ("theta", "temperature", "top_p", "top_k", "max_new_tokens")
"""Settings the eager adapters record per task (what actually ran, gen_kwargs applied, theta
calibrated where theta=auto)."""


def _stock_settings(task_config: dict) -> dict[str, Any]:
    """Sampling settings of a stock lm-eval model: the task's repeats and generation_kwargs."""
    out: dict[str, Any] = {}
    repeats = as_number(task_config.get("repeats"))
    if repeats is not None:
        out["max_seqs"] = int(repeats)
    gen = task_config.get("generation_kwargs") if isinstance(task_config.get("generation_kwargs"), dict) else {}
    if gen.get("do_sample") is False:
        out["temperature"] = 0.0
    elif as_number(gen.get("temperature")) is not None:
        out["temperature"] = gen["temperature"]
    for ours, theirs in (("max_new_tokens", "max_gen_toks"), ("top_p", "top_p"), ("top_k", "top_k")):
        if as_number(gen.get(theirs)) is not None:
            out[ours] = gen[theirs]
    return out


def _task_stats(value: Any) -> dict[str, Any]:
    """The adapter's per-task statistics (`get_model_info()["eager_eval"]["tasks"][task]`), a
    list with one entry per generation call, combined: exact #T, prompts, S_p range."""
    entries = [e for e in (value if isinstance(value, list) else [value]) if isinstance(e, dict)]
    if not entries:
        return {}
    out: dict[str, Any] = {}
    sums = {"n_prompts": [], "tokens_generated": [], "n_sequences": []}
    for entry in entries:
        for name in sums:
            number = as_number(entry.get(name))
            if number is not None:
                sums[name].append(number)
    if len(sums["n_prompts"]) == len(entries):
        out["n_prompts"] = sum(sums["n_prompts"])
    if len(sums["tokens_generated"]) == len(entries):
        out["tokens_generated"] = sum(sums["tokens_generated"])
    if len(sums["n_sequences"]) == len(entries) and out.get("n_prompts"):
        out["seqs_mean"] = sum(sums["n_sequences"]) / out["n_prompts"]
    lows = [as_number(e.get("seqs_min")) for e in entries]
    highs = [as_number(e.get("seqs_max")) for e in entries]
    if all(v is not None for v in lows):
        out["seqs_min"] = min(lows)
    if all(v is not None for v in highs):
        out["seqs_max"] = max(highs)
    if len(entries) == 1:
        for name in _TASK_STAT_SETTINGS:
            if entries[0].get(name) is not None:
                out[name] = entries[0][name]
        if isinstance(entries[0].get("rounds"), list):  # the pool's rounds (one run)
            out["rounds"] = entries[0]["rounds"]
    return out


def _lm_eval_metrics(task: str, entry: dict, task_config: dict,
                     warnings: list[str]) -> tuple[dict[str, float], set[str]]:
    """Our metrics from 'name,filter' keys: filter 'none' first, else the only/first one.
    Also returns the count metrics that lm-eval aggregated by their mean."""
    by_name: dict[str, dict[str, float]] = {}
    for key, value in entry.items():
        name, _, filter_name = str(key).partition(",")
        ours = metric_key(name)
        number = as_number(value)
        if ours is None or name.endswith("_stderr") or is_unrecorded(ours, value):
            continue
        if number is None:
            not_a_number(f"{task}: {key}", value, warnings)
            continue
        by_name.setdefault(ours, {}).setdefault(filter_name or "none", number)
    if not by_name:
        return {}, set()
    if "n_prompts" not in by_name and as_number(entry.get("sample_len")) is not None:
        by_name["n_prompts"] = {"none": entry["sample_len"]}
    metrics: dict[str, float] = {}
    for name, values in by_name.items():
        metrics[name] = values["none"] if "none" in values else next(iter(values.values()))
    filters = sorted({f for v in by_name.values() for f in v} - {"none"})
    if len(filters) > 1:
        warnings.append(f"{task}: metrics under several filters ({', '.join(filters)}); "
                        "the table uses 'none' where present, else the first one")
    aggregation = _aggregations(task_config)
    means = set()
    for name in ("tokens_generated", "tokens_in_outputs"):
        if name not in metrics:
            continue
        how = aggregation.get(name)
        if how == "mean":
            means.add(name)
        elif how != "sum":
            reason = "no recorded aggregation" if how is None else f"aggregation {how!r}"
            warnings.append(f"{task}: {name} has {reason}: total unknown, left blank")
            del metrics[name]
    return metrics, means


def _aggregations(task_config: dict) -> dict[str, str]:
    """metric -> 'mean', 'sum' or the raw text (lm-eval dumps an aggregation function as its
    source code: eager_eval's `total` returns sum(values))."""
    out: dict[str, str] = {}
    for item in task_config.get("metric_list") or []:
        if not isinstance(item, dict) or "metric" not in item or item.get("aggregation") is None:
            continue
        name = METRIC_ALIASES.get(str(item["metric"]), str(item["metric"]))
        text = str(item["aggregation"]).strip()
        if text.lower() in ("mean", "sum", "total"):
            out[name] = "sum" if text.lower() == "total" else text.lower()
        elif re.search(r"return\s+(float\()?sum\(", text):
            out[name] = "sum"
        else:
            out[name] = text
    return out


def _totals_from_means(run: Run, means: set[str], data: dict, warnings: list[str]) -> None:
    """#T = mean per prompt x prompts, for counts lm-eval averaged; unknown n -> blank."""
    n = run.metrics.get("n_prompts")
    if n is None:
        counts = (data.get("n-samples") or {}).get(run.task) or {}
        n = as_number(counts.get("effective"))
        if n is not None:
            run.metrics["n_prompts"] = n
    for name in sorted(means):
        mean = run.metrics.pop(name)
        if n is None:
            if not run.prompts:
                warnings.append(f"{run.task}: {name} is a per-prompt mean and the number of "
                                "prompts is unknown: total left blank")
            continue
        total = mean * n
        run.metrics[name] = round(total) if abs(total - round(total)) < 1e-6 else total


def _drop_uncounted_tokens(run: Run, warnings: list[str]) -> None:
    """A model that does not count tokens (a stock hf/vllm model on our tasks) reports
    #T = 0 while it generated sequences: that 0 is not a measurement."""
    recorded = run.metrics.get("tokens_generated")
    if recorded is None:
        return
    per_prompt = [p.tokens_generated for p in run.prompts or []]
    uncounted = (recorded == 0 and (run.metrics.get("seqs_mean") or 0) > 0) or (
        bool(per_prompt) and all(t is None for t in per_prompt))
    if uncounted:
        run.metrics.pop("tokens_generated", None)
        warnings.append(f"{run.task}: the model did not count generated tokens (tokens_generated "
                        "is 0 with sequences generated); #T left blank, use eager-hf/eager-vllm "
                        "with mode=full_parallel for a baseline with #T")


def _dedupe_docs(records: list[dict]) -> list[dict]:
    """lm-eval logs a doc once per filter pipeline: keep the 'none' one, else the first."""
    by_doc: dict[Any, dict] = {}
    for record in records:
        doc = record.get("doc_id")
        if doc not in by_doc or record.get("filter") == "none":
            by_doc[doc] = record
    return sorted(by_doc.values(), key=lambda r: (r.get("doc_id") is None, r.get("doc_id") or 0))


__all__ = ["read_lm_eval", "LM_EVAL_DATE"]
