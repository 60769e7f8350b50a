"""Read runs from the three formats the report accepts; anything else becomes a warning.

1. An `eager-eval run`/`demo` directory: `results.json` ("tool": "eager-eval") plus one
   `<method>.jsonl` of per-prompt records per run.
2. An lm-eval results JSON (`OUT/<model>/results_<date>.json`) plus, with `--log_samples`,
   `samples_<task>_<date>.jsonl` beside it (same date).
3. An Inspect log (`.json` or `.eval`), read with `inspect_ai.log.read_eval_log`.

Directories are searched recursively. A file that cannot be read, or is none of the three, is
reported and skipped: one bad file never hides the readable runs. Numbers are taken as the
source recorded them. #T is a total: an exact total wins (results.json, the eager adapters'
`get_model_info()["eager_eval"]["tasks"]`, per-prompt samples, an lm-eval metric aggregated by
a sum such as tasks/'s `total`); a per-prompt mean (an lm-eval `aggregation: mean`) becomes
mean x prompts; an unknown aggregation leaves #T blank.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from eager_eval.report.runs import (
    METRIC_ALIASES,
    MISSING,
    BranchPoint,
    PromptStat,
    Run,
    as_number,
    metric_key,
    normalise_method,
    normalise_settings,
)

RECORDED_METRICS = ("pass_at_k", "cons_at_k", "pass_rate", "tokens_generated", "n_prompts")
"""What an eager-eval results.json always records per method: a missing one is a warning."""

SWEEP_MANIFEST_TOOL = "eager-eval-sweep"
"""`sweep.json` written by `eager-eval sweep`: known, not a run, skipped quietly."""

DEFAULT_METHOD = "eager_adapt"
"""EagerConfig's default mode: what an EAGer adapter ran when no mode was recorded."""

_LM_EVAL_DATE = re.compile(r"_(\d{4}-\d{2}-\d{2}T[0-9.\-]+)$")
_RESULT_SUFFIXES = (".json", ".eval")


class UnreadableRun(ValueError):
    """A file looked like a result but could not be read; the message says why."""


@dataclass
class ReadResult:
    runs: list[Run] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0
    """Result files read successfully (a file may hold several runs)."""


def display_path(path: Path) -> str:
    """Relative to the working directory when below it: shorter in tables and messages."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_runs(paths: Iterable[str | Path]) -> ReadResult:
    """Every run found under `paths` (files or directories), with a warning per problem."""
    result = ReadResult()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            result.warnings.append(f"{raw}: no such file or directory")
        elif path.is_dir():
            _read_directory(path, result)
        else:
            _read_one(path, result, explicit=True)
    return result


def _read_directory(root: Path, result: ReadResult) -> None:
    found_before = result.files
    tried = 0

    def on_error(err: OSError) -> None:
        result.warnings.append(f"{err.filename}: cannot list directory ({err.strerror})")

    for directory, dirs, files in os.walk(root, onerror=on_error):
        directory = Path(directory)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "results.json" in files and _is_eager_eval_file(directory / "results.json"):
            # an eager-eval run directory: results.json names its JSONL files; the rest
            # (trees/, the resume store) is the run's own business
            dirs[:] = []
            tried += 1
            _read_one(directory / "results.json", result)
            continue
        claimed: set[str] = set()
        for name in sorted(files):
            if name.endswith(_RESULT_SUFFIXES):
                tried += 1
                claimed |= _read_one(directory / name, result)
        orphans = [n for n in sorted(files) if n.endswith(".jsonl") and n not in claimed]
        if orphans and not any(n.endswith(_RESULT_SUFFIXES) for n in files):
            result.warnings.append(
                f"{display_path(directory)}: {len(orphans)} JSONL file(s) ({orphans[0]}, ...) but "
                "no results file: an unfinished or interrupted run? skipped"
            )
    if result.files == found_before:
        what = "no readable results" if tried else "no result files (.json, .eval)"
        result.warnings.append(f"{display_path(root)}: {what} found in this directory")


def _is_eager_eval_file(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("tool") == "eager-eval"


def _read_one(path: Path, result: ReadResult, explicit: bool = False) -> set[str]:
    """Read one file into `result`; returns the names of sample files it used (claimed)."""
    shown = display_path(path)
    try:
        if path.suffix == ".eval":
            runs, warnings, claimed = _read_inspect(path)
        elif path.suffix == ".json":
            data = _load_json(path)
            kind = _json_kind(data)
            if kind == "sweep":
                return set()
            if kind == "eager-eval":
                runs, warnings, claimed = _read_eager_eval(path, data)
            elif kind == "lm-eval":
                runs, warnings, claimed = _read_lm_eval(path, data)
            elif kind == "inspect":
                runs, warnings, claimed = _read_inspect(path)
            else:
                result.warnings.append(
                    f"{shown}: not an eager-eval, lm-eval or Inspect result file; skipped"
                )
                return set()
        else:
            if explicit:
                result.warnings.append(
                    f"{shown}: not a result file (expected an eager-eval run directory, an lm-eval "
                    "results_*.json or an Inspect .json/.eval log); skipped"
                )
            return set()
    except UnreadableRun as err:
        result.warnings.append(f"{shown}: {err}; skipped")
        return set()
    result.warnings.extend(f"{shown}: {w}" for w in warnings)
    if runs:
        result.files += 1
        result.runs.extend(runs)
    return claimed


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise UnreadableRun(f"invalid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UnreadableRun(f"cannot read ({err})") from None


def _json_kind(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if data.get("tool") == "eager-eval":
        return "eager-eval"
    if data.get("tool") == SWEEP_MANIFEST_TOOL:
        return "sweep"
    if isinstance(data.get("results"), dict) and ("config" in data or "configs" in data):
        return "lm-eval"
    if isinstance(data.get("eval"), dict) and "version" in data and "status" in data:
        return "inspect"
    return None


def _read_jsonl(path: Path, warnings: list[str]) -> list[dict]:
    rows: list[dict] = []
    bad = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    if bad:
        warnings.append(f"{path.name}: {bad} unreadable line(s) ignored")
    return rows


def _int_or_none(value: Any) -> int | None:
    number = as_number(value)
    return int(number) if number is not None else None


def _branch_points(events: Any) -> list[BranchPoint]:
    points = []
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict):
            continue
        position = as_number(event.get("position"))
        entropy = as_number(event.get("entropy"))
        if position is None or entropy is None:
            continue
        points.append(BranchPoint(int(position), float(entropy), as_number(event.get("threshold"))))
    return points


def _samples_stats(records: list[dict]) -> tuple[list[PromptStat], list[BranchPoint] | None]:
    """Per-prompt statistics and branch points from per-prompt records (any harness)."""
    prompts = []
    branches: list[BranchPoint] | None = None
    for index, record in enumerate(records):
        prompt_idx = _int_or_none(record.get("prompt_idx", record.get("doc_id")))
        prompts.append(PromptStat(
            prompt_idx=index if prompt_idx is None else prompt_idx,
            n_sequences=_int_or_none(record.get("n_sequences")),
            tokens_generated=_int_or_none(record.get("tokens_generated")),
        ))
        events = record.get("branch_events")
        if events is None and isinstance(record.get("eager"), dict):
            events = record["eager"].get("branch_events")
        if events is not None:
            branches = (branches or []) + _branch_points(events)
    return prompts, branches


def _fill_from_prompts(run: Run, warnings: list[str]) -> None:
    """Metrics the per-prompt records determine, where the aggregate left them out;
    a total that disagrees with the records is reported (the records win for #T)."""
    prompts = run.prompts or []
    seqs = [p.n_sequences for p in prompts]
    tokens = [p.tokens_generated for p in prompts]
    if prompts and all(s is not None for s in seqs):
        run.metrics.setdefault("seqs_min", min(seqs))
        run.metrics.setdefault("seqs_max", max(seqs))
        run.metrics.setdefault("seqs_mean", sum(seqs) / len(seqs))
    if prompts:
        run.metrics.setdefault("n_prompts", len(prompts))
    if prompts and all(t is not None for t in tokens):
        total = sum(tokens)
        recorded = run.metrics.get("tokens_generated")
        if recorded is not None and abs(recorded - total) > 0.5:
            warnings.append(
                f"{run.task}/{run.method}: tokens_generated {recorded:g} in the results but the "
                f"per-prompt samples sum to {total}; using {total}"
            )
        run.metrics["tokens_generated"] = total


# --- 1. eager-eval ------------------------------------------------------------------------------
def _read_eager_eval(path: Path, data: dict) -> tuple[list[Run], list[str], set[str]]:
    warnings: list[str] = []
    if data.get("format_version") != 1:
        warnings.append(f"format_version {data.get('format_version')!r} (this report reads 1); "
                        "reading it anyway")
    runs_data = data.get("runs")
    if not isinstance(runs_data, list) or not runs_data:
        raise UnreadableRun("eager-eval results.json holds no runs (\"runs\" is empty or missing)")
    model, task = data.get("model"), data.get("task")
    if not model or not task:
        raise UnreadableRun("eager-eval results.json lacks \"model\" or \"task\"")
    runs, claimed = [], set()
    for entry in runs_data:
        if not isinstance(entry, dict) or "method" not in entry:
            warnings.append("a run entry without \"method\" ignored")
            continue
        settings = normalise_settings(entry.get("settings") or {})
        raw_metrics = entry.get("metrics") if isinstance(entry.get("metrics"), dict) else {}
        metrics = _numbers(raw_metrics, f"{entry['method']}: ", warnings)
        missing = [name for name in RECORDED_METRICS if name not in raw_metrics]
        if missing:
            warnings.append(f"{entry['method']}: no {', '.join(missing)} recorded; shown as "
                            f"{MISSING}")
        run = Run("eager-eval", path, str(model), normalise_method(entry["method"]), str(task),
                  settings, metrics, stored_savings=as_number(entry.get("savings_vs_full_parallel")),
                  prompts_sha256=entry.get("prompts_sha256"))
        samples = entry.get("samples")
        if samples:
            sample_path = path.parent / str(samples)
            if sample_path.is_file():
                claimed.add(sample_path.name)
                records = _read_jsonl(sample_path, warnings)
                run.prompts, run.branches = _samples_stats(records)
                if run.branches is None:
                    run.branches = []  # eager-eval always logs forks: none happened
                _check_prompt_count(run, warnings)
                _fill_from_prompts(run, warnings)
            else:
                warnings.append(f"{run.method}: samples file {samples} is missing; per-prompt "
                                "plots leave this run out")
        runs.append(run)
    return runs, warnings, claimed


def _check_prompt_count(run: Run, warnings: list[str]) -> None:
    n = run.metrics.get("n_prompts")
    if n is not None and run.prompts is not None and n != len(run.prompts):
        warnings.append(f"{run.method}: n_prompts is {n:g} but the samples file has "
                        f"{len(run.prompts)} prompts")


def _numbers(metrics: dict, where: str, warnings: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in metrics.items():
        key = metric_key(str(name))
        number = as_number(value)
        if key is not None and number is not None:
            out.setdefault(key, number)
        elif key is not None:
            _not_a_number(where + str(name), value, warnings)
    return out


def _not_a_number(name: str, value: Any, warnings: list[str]) -> None:
    """A metric of ours the source holds as text, null or NaN: blank in the table, said so."""
    warnings.append(f"{name} is {value!r}, not a number; shown as {MISSING}")


# --- 2. lm-eval ---------------------------------------------------------------------------------
def parse_model_args(model_args: Any) -> dict[str, Any]:
    """lm-eval's --model_args: a dict, a JSON object string, or 'k=v,k2=v2'."""
    if isinstance(model_args, dict):
        return dict(model_args)
    if not isinstance(model_args, str) or not model_args.strip():
        return {}
    text = model_args.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
            return value if isinstance(value, dict) else {}
        except json.JSONDecodeError:
            pass
    out = {}
    for part in text.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
    return out


_TASK_STAT_SETTINGS = ("theta", "temperature", "top_p", "top_k", "max_new_tokens")
"""Settings the eager adapters record per task (what actually ran, gen_kwargs applied, theta
calibrated where theta=auto)."""


def _read_lm_eval(path: Path, data: dict) -> tuple[list[Run], list[str], set[str]]:
    """One run per task with EAGer metrics.

    The method: the EAGer settings' mode (`get_model_info()["eager_eval"]["settings"]`, else a
    `mode=` model arg, else EagerConfig's default) for the eager-hf/eager-vllm models. A stock
    model (`--model hf`/`vllm`) on the tasks in tasks/ samples `repeats` independent
    sequences per prompt: a Full Parallel run with M = repeats.
    """
    warnings: list[str] = []
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    model_args = parse_model_args(config.get("model_args"))
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
    date = _LM_EVAL_DATE.search(path.stem)
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
        run_settings.update({k: stats.pop(k) for k in _TASK_STAT_SETTINGS if k in stats})
        for name, value in stats.items():  # exact totals from the adapter win over aggregates
            metrics[name] = value
            means.discard(name)
        run = Run("lm-eval", path, str(model), normalise_method(run_method), str(task),
                  run_settings, metrics)
        samples = path.parent / f"samples_{task}_{date.group(1)}.jsonl" if date else None
        if samples is not None and samples.is_file():
            claimed.add(samples.name)
            records = [_lm_eval_sample(r) for r in _dedupe_docs(_read_jsonl(samples, warnings))]
            run.prompts, run.branches = _samples_stats(records)
        _totals_from_means(run, means, data, warnings)
        _drop_uncounted_tokens(run, warnings)
        _fill_from_prompts(run, warnings)
        runs.append(run)
    if not runs:
        raise UnreadableRun("lm-eval results hold no task with EAGer metrics "
                            "(pass_at_k, cons_at_k, tokens_generated, ...)")
    return runs, warnings, claimed


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
        if ours is None or name.endswith("_stderr"):
            continue
        if number is None:
            _not_a_number(f"{task}: {key}", value, warnings)
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
        run.prompts = [PromptStat(p.prompt_idx, p.n_sequences, None) for p in run.prompts or []] or None
        warnings.append(f"{run.task}: the model did not count generated tokens (tokens_generated "
                        "is 0 with sequences generated); #T left blank, use eager-hf/eager-vllm "
                        "with mode=full_parallel for a baseline with #T")


def _lm_eval_sample(record: dict) -> dict:
    """A samples-file line with the EAGer record (the tasks' `all_sequences` filter puts it,
    as JSON text, in filtered_resps) merged in: per-doc counts and branch points."""
    merged = dict(record)
    resps = record.get("filtered_resps")
    first = resps[0] if isinstance(resps, list) and resps else None
    if isinstance(first, str) and first.startswith("{"):
        try:
            first = json.loads(first)
        except json.JSONDecodeError:
            first = None
    if isinstance(first, dict):
        for key in ("n_sequences", "tokens_generated"):
            if merged.get(key) is None and first.get(key) is not None:
                merged[key] = first[key]
        if first.get("tokens_generated") is None and "sequences" in first:
            merged["tokens_generated"] = None  # the record says: not counted
        events = first.get("branch_events", first.get("branch_points"))
        if events is not None and "branch_events" not in merged:
            merged["branch_events"] = events
    return merged


def _dedupe_docs(records: list[dict]) -> list[dict]:
    """lm-eval logs a doc once per filter pipeline: keep the 'none' one, else the first."""
    by_doc: dict[Any, dict] = {}
    for record in records:
        doc = record.get("doc_id")
        if doc not in by_doc or record.get("filter") == "none":
            by_doc[doc] = record
    return sorted(by_doc.values(), key=lambda r: (r.get("doc_id") is None, r.get("doc_id") or 0))


# --- 3. Inspect ---------------------------------------------------------------------------------
def _read_inspect(path: Path) -> tuple[list[Run], list[str], set[str]]:
    """Settings: GenerateConfig, then the -M model args, then the settings the eager provider
    logged with each sample (what actually ran) win. Metrics: the log's results."""
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
    warnings: list[str] = []
    spec = log.eval
    provider, _, name = spec.model.partition("/")
    model = name if provider == "eager" and name else spec.model
    settings: dict[str, Any] = {}
    generate = spec.model_generate_config
    for ours, theirs in (("temperature", "temperature"), ("seed", "seed"),
                         ("max_new_tokens", "max_tokens"), ("top_p", "top_p"), ("top_k", "top_k")):
        value = getattr(generate, theirs, None) if generate is not None else None
        if value is not None:
            settings[ours] = value
    settings.update(normalise_settings(dict(spec.model_args or {})))
    records = [_inspect_sample_record(s) for s in (log.samples or [])]
    logged = next((r["settings"] for r in records if isinstance(r.get("settings"), dict)), None)
    if logged is not None:
        settings.update(normalise_settings(logged))
    method = settings.pop("mode", None)
    if method is None:
        method = DEFAULT_METHOD
        if provider != "eager":
            warnings.append(f"model {spec.model!r} records no EAGer mode; "
                            f"assuming {DEFAULT_METHOD} (EagerConfig's default)")
    metrics: dict[str, float] = {}
    for score in log.results.scores:
        for metric_name, metric in score.metrics.items():
            key = metric_key(metric_name.rsplit("/", 1)[-1])
            value = as_number(metric.value)
            if key is None:
                continue
            if value is None:
                _not_a_number(f"{score.name}/{metric_name}", metric.value, warnings)
                continue
            if key in metrics and metrics[key] != value:
                warnings.append(f"{key}: scorers disagree ({metrics[key]:g} vs {value:g}); "
                                f"using the first ({score.name} ignored)")
                continue
            metrics[key] = value
    if not metrics:
        raise UnreadableRun("Inspect log has none of the EAGer metrics (pass_at_k, cons_at_k, "
                            "tokens_generated, ...)")
    if "n_prompts" not in metrics and log.results.completed_samples:
        epochs = (spec.config.epochs if spec.config is not None else None) or 1
        metrics["n_prompts"] = log.results.completed_samples // epochs
    task = spec.task.rsplit("@", 1)[-1]
    run = Run("inspect", path, model, normalise_method(method), task, settings, metrics)
    if any(k in r for r in records for k in ("n_sequences", "tokens_generated", "branch_events")):
        run.prompts, run.branches = _samples_stats(records)
        _fill_from_prompts(run, warnings)
    return [run], warnings, set()


def _inspect_sample_record(sample: Any) -> dict:
    """EAGer statistics of one sample: the provider logs them in the output's metadata."""
    record: dict = {}
    sources = [getattr(sample.output, "metadata", None) if sample.output else None]
    sources += [score.metadata for score in (sample.scores or {}).values()]
    for source in sources:
        if isinstance(source, dict):
            for key in ("n_sequences", "tokens_generated", "branch_events", "settings"):
                if key in source and key not in record:
                    record[key] = source[key]
    return record


__all__ = ["ReadResult", "UnreadableRun", "read_runs", "parse_model_args", "display_path",
           "DEFAULT_METHOD", "SWEEP_MANIFEST_TOOL"]
