"""A sweep's grid: its YAML read and checked, and the cells it expands to (`eager-eval sweep`).

The grid is models x tasks x modes x theta x M. Full Parallel and DeepConf never branch, so
each gets one cell per model x task x M whatever the thetas. Every cell is one `eager-eval run` (or, for the
task `demo`, `eager-eval demo`) in its own directory under the sweep's output:

    <output>/<model with / as __>/<task>/<mode>[-theta<θ>]-M<M>/results.json

The YAML (every key optional except models, tasks, modes):

    models: [Qwen/Qwen3-4B]            # or model: ...
    tasks: [aime25, gpqa_diamond]      # or task: ...; see TASKS below
    modes: [full_parallel, eager_init, eager_adapt, eager]
    theta: [2.0, 2.4, auto]            # a number or a list; `auto` calibrates on the task
    max_seqs: [32]                     # M: a number or a list
    limit: null                        # first N prompts of each task
    output: runs/qwen3-4b              # relative to the working directory; --output overrides
    temperature: 0.6                   # any other EagerConfig field: shared by every cell
    max_new_tokens: 32768
    run_args: {device: cuda}           # extra `eager-eval run` options: --key value
    data_dir: /path/to/data            # EAGER_EVAL_DATA_DIR for the built-in tasks
    report: true                       # build the report at the end

TASKS: `demo` (the CLI's generated problems, through `eager-eval demo`); `aime25` and
`gpqa_diamond` (from `eager_eval.pipeline.datasets`, the prompts lm-eval and Inspect see, written
once into `<output>/data/` as the `--data` file of every cell); a `.jsonl`/`.csv` path; or a
mapping {data: path, answer_type: math|choice, problem_field: ..., answer_field: ...}.

Everything a sweep can get wrong in its YAML is refused here, before any cell runs (the
`--dry-run` included); running the cells is `sweep.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from eager_eval.core.config import THETA_AUTO as AUTO
from eager_eval.core.config import NON_BRANCHING, ConfigError, EagerConfig, Mode, unknown_setting_error
from eager_eval.common.files import output_path
from eager_eval.common.errors import UserError
from eager_eval.common.settings import RENAMED, parse_value, renamed_settings
from eager_eval.frontends.cli.options import COMMAND_ARGUMENTS, Parser, UsageError


"""The manifest's "tool": the report knows it and skips it."""

GRID_KEYS = frozenset({"models", "model", "tasks", "task", "modes", "mode", "theta", "max_seqs",
                       "limit", "output", "run_args", "data_dir", "report", "name"})
TASK_KEYS = frozenset({"data", "answer_type", "problem_field", "answer_field", "name"})
BUILTIN_TASKS = {"aime25": "math", "gpqa_diamond": "choice"}
"""Tasks read through `eager_eval.pipeline.datasets` (the lm-eval and Inspect tasks' prompts)."""
DEMO_TASK = "demo"
DATA_SUFFIXES = (".jsonl", ".json", ".csv")


class SweepConfigError(ConfigError):
    """A sweep YAML problem; the message names the key, the value and the fix."""


@dataclass(frozen=True)
class TaskSpec:
    """What a cell runs on: the demo problems, a built-in benchmark or a data file."""

    name: str
    """The task's name in results.json and the report (a data file's stem, as `run` names it)."""
    kind: str
    """'demo' | 'builtin' | 'file'."""
    data: Path | None = None
    """The `--data` file ('builtin': written into <output>/data/ when a cell first needs it)."""
    answer_type: str = "math"
    problem_field: str | None = None
    answer_field: str | None = None


def parse_task(value: Any) -> TaskSpec:
    if isinstance(value, Mapping):
        for key in value:
            if key not in TASK_KEYS:
                raise unknown_setting_error(str(key), TASK_KEYS, where="task key")
        if "data" not in value:
            raise SweepConfigError("tasks", dict(value), "a mapping with a `data:` file")
        for key in value:
            if value[key] is not None and not isinstance(value[key], str):
                raise SweepConfigError(f"task {key}", value[key], "text (quote it in the YAML)")
        spec = parse_task(str(value["data"]))
        answer_type = str(value.get("answer_type", spec.answer_type))
        if answer_type not in ("math", "choice"):
            raise SweepConfigError("answer_type", answer_type, "math or choice")
        return replace(spec, answer_type=answer_type, problem_field=value.get("problem_field"),
                       answer_field=value.get("answer_field"),
                       name=str(value.get("name", spec.name)))
    if not isinstance(value, str):
        raise SweepConfigError("tasks", value, f"{DEMO_TASK}, one of {', '.join(BUILTIN_TASKS)}, "
                               "a .jsonl/.csv file, or a mapping {data: FILE, answer_type: "
                               "math|choice}")
    text = value
    if text == DEMO_TASK:
        return TaskSpec(DEMO_TASK, "demo")
    if text in BUILTIN_TASKS:
        return TaskSpec(text, "builtin", answer_type=BUILTIN_TASKS[text])
    if text.lower().endswith(DATA_SUFFIXES):
        path = Path(text).expanduser()
        return TaskSpec(path.stem, "file", path)
    raise SweepConfigError("tasks", text, f"{DEMO_TASK}, one of {', '.join(BUILTIN_TASKS)}, a "
                           ".jsonl/.csv file, or a mapping {data: FILE, answer_type: math|choice}")


@dataclass(frozen=True)
class Cell:
    """One `eager-eval run` of the grid."""

    model: str
    task: TaskSpec
    config: EagerConfig
    output_dir: Path
    explicit: tuple[str, ...] = ()
    """EagerConfig fields the YAML set (passed on the command line; the rest stay default)."""
    @property
    def theta_auto(self) -> bool:
        """theta: auto: the run calibrates theta on the task."""
        return self.config.theta_is_auto

    @property
    def mode(self) -> str:
        return self.config.mode.value

    @property
    def theta_label(self) -> str:
        return AUTO if self.theta_auto else _fmt(self.config.theta)

    @property
    def name(self) -> str:
        theta = f" θ={self.theta_label}" if self.config.is_branching else ""
        return f"{self.model} {self.task.name} {self.mode}{theta} M={self.config.max_seqs}"


@dataclass
class SweepConfig:
    models: list[str]
    tasks: list[TaskSpec]
    modes: list[Mode]
    thetas: list[float | str]
    """Numbers, and "auto" for a cell that calibrates theta on its task (docs/THETA.md)."""
    max_seqs: list[int]
    settings: dict[str, Any]
    """Shared EagerConfig fields (temperature, max_new_tokens, think_end, seed, ...)."""
    output: Path
    limit: int | None = None
    run_args: dict[str, Any] = field(default_factory=dict)
    data_dir: Path | None = None
    report: bool = True
    name: str | None = None
    source: Path | None = None


def _as_list(key: str, value: Any) -> list:
    values = value if isinstance(value, list) else [value]
    if value is None or not values:
        raise SweepConfigError(key, value, "a value or a non-empty list")
    return values


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:g}"


def parse_sweep_config(data: Mapping[str, Any], *, source: Path | None = None) -> SweepConfig:
    """Validate a parsed YAML mapping: unknown keys and out-of-range settings are errors."""
    if not isinstance(data, Mapping):
        raise SweepConfigError("sweep config", type(data).__name__, "a mapping of keys to values")
    known = GRID_KEYS | EagerConfig.field_names()
    data = renamed_settings(data, "sweep key")
    for key in data:
        if key not in known:
            raise unknown_setting_error(str(key), known, where="sweep key")

    def pick(*names: str) -> Any:
        present = [n for n in names if n in data]
        if len(present) > 1:
            raise SweepConfigError(present[1], data[present[1]], f"given once (also set as {present[0]})")
        return data[present[0]] if present else None

    models = [_model_name(m) for m in _as_list("models", pick("models", "model"))]
    tasks = [parse_task(t) for t in _as_list("tasks", pick("tasks", "task"))]
    modes = [EagerConfig(mode=raw).mode for raw in _as_list("modes", pick("modes", "mode"))]
    thetas = [EagerConfig(theta=parse_value(t)).theta  # a number, or auto
              for t in _as_list("theta", data.get("theta", EagerConfig.theta))]
    max_seqs = [EagerConfig(max_seqs=parse_value(m)).max_seqs
                for m in _as_list("max_seqs", data.get("max_seqs", EagerConfig.max_seqs))]
    settings = {k: v for k, v in data.items() if k in EagerConfig.field_names()
                and k not in ("mode", "theta", "max_seqs")}
    EagerConfig.from_mapping(settings)  # every shared setting checked once, here
    limit = data.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise SweepConfigError("limit", limit, "an integer >= 1, or null for every prompt")
    run_args = data.get("run_args") or {}
    if not isinstance(run_args, Mapping):
        raise SweepConfigError("run_args", run_args, "a mapping of `eager-eval run` options")
    output = _text_or_none("output", data.get("output"), "a directory path")
    if output is None:
        output = str(Path("runs") / (source.stem if source is not None else "sweep"))
    data_dir = _text_or_none("data_dir", data.get("data_dir"), "a directory path")
    report = data.get("report", True)
    if not isinstance(report, bool):
        raise SweepConfigError("report", report, "true or false")
    sweep = SweepConfig(
        models=models, tasks=tasks, modes=modes, thetas=thetas, max_seqs=max_seqs,
        settings=settings, output=output_path(output, "output"), limit=limit,
        run_args=dict(run_args),
        data_dir=Path(data_dir).expanduser() if data_dir else None,
        report=report, name=_text_or_none("name", data.get("name"), "a name"), source=source,
    )
    check_run_args(sweep)
    return sweep


def _model_name(value: Any) -> str:
    """A model of the grid: a name or a path, as text (YAML makes `5` a number and `null` or
    a mapping something else: each would become a directory named after its Python text)."""
    if not isinstance(value, str) or not value.strip():
        raise SweepConfigError("models", value, "a model name or path as text (quote a name "
                               "that YAML reads as a number)")
    return value


def _text_or_none(key: str, value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SweepConfigError(key, value, f"{what} as text (quote it in the YAML)")
    return value


SWEEP_OWNS = {"model": "models", "data": "tasks", "output": "output", "answer_type": "tasks",
              "problem_field": "tasks", "answer_field": "tasks", "limit": "limit",
              "modes": "modes", "problem_seed": "tasks"}
"""`eager-eval run`/`demo` options the sweep sets itself, and the sweep key that sets them."""


def check_run_args(sweep: SweepConfig) -> None:
    """`run_args` must be options of the cells' commands, with values they accept: checked by
    parsing each kind of cell's command line with the CLI's own parser (a dry run would
    otherwise plan cells that all fail at their first line). What the sweep sets itself
    (the model, the data, the output, the settings, --resume) is refused with the key to use."""
    for key, value in sweep.run_args.items():
        name = str(key).replace("-", "_")
        plain = name[3:] if name.startswith("no_") else name
        if plain == "resume":
            raise SweepConfigError("run_args", {key: value}, "", message=(
                f"run_args: {key} is the sweep's own: it runs every cell with --resume, so a "
                "stopped sweep continues each cell where it stopped; remove it"))
        if plain in SWEEP_OWNS:
            raise SweepConfigError("run_args", {key: value}, "", message=(
                f"run_args: {key} is set by the sweep for each cell: use the sweep key "
                f"{SWEEP_OWNS[plain]!r}"))
        if plain in EagerConfig.field_names() or plain in RENAMED:
            raise SweepConfigError("run_args", {key: value}, "", message=(
                f"run_args: {key} is an EAGer setting: give it as a sweep key of its own "
                f"({plain}: ...), where every cell's directory and resume check see it"))
    kinds = {task.kind == DEMO_TASK for task in sweep.tasks}
    config = EagerConfig.from_mapping({**sweep.settings, "mode": "eager_init"})
    for is_demo in kinds:
        task = TaskSpec(DEMO_TASK, "demo") if is_demo else TaskSpec("t", "file", Path("t.jsonl"))
        args = run_command_line("m", task, config, sweep.output, run_args=sweep.run_args)
        parser = Parser(prog=f"eager-eval {args[0]}")
        COMMAND_ARGUMENTS[args[0]](parser)
        try:
            parser.parse_args(args[1:])
        except UsageError as err:
            raise SweepConfigError("run_args", sweep.run_args, "", message=(
                f"run_args {sweep.run_args} do not make a valid `eager-eval {args[0]}` command "
                f"line: {str(err).split('error: ', 1)[-1]}")) from None


def load_sweep_config(path: str | Path) -> SweepConfig:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SweepConfigError("CONFIG", str(path), "a readable YAML file",
                               message=f"cannot read {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SweepConfigError("CONFIG", str(path), "valid YAML",
                               message=f"{path}: invalid YAML: {err}") from None
    return parse_sweep_config(data or {}, source=path)


def model_slug(model: str) -> str:
    """A directory name for a model: hub ids keep their owner, as lm-eval does (owner__name)."""
    return model.strip("/").replace("/", "__").replace("\\", "__")


def cell_dir_name(config: EagerConfig) -> str:
    label = AUTO if config.theta_is_auto else _fmt(config.theta)
    theta = f"-theta{label}" if config.is_branching else ""
    return f"{config.mode.value}{theta}-M{config.max_seqs}"


MAX_CELLS = 1000
"""Cells a sweep runs without --max-cells: each is a whole `eager-eval run`, so a grid above
this (a list pasted twice over, a theta range of a hundred values) is more likely a mistake
than a plan; it is refused with its count before anything runs."""


def grid_size(sweep: SweepConfig) -> tuple[int, str]:
    """(the number of cells, how it comes about), counted without building them."""
    models, tasks = len(dict.fromkeys(sweep.models)), len({t.name: t for t in sweep.tasks})
    ms, thetas = len(dict.fromkeys(sweep.max_seqs)), len(dict.fromkeys(map(str, sweep.thetas)))
    modes = list(dict.fromkeys(sweep.modes))
    per = sum(1 if mode in NON_BRANCHING else thetas for mode in modes)
    return (models * tasks * ms * per,
            f"{models} models x {tasks} tasks x {ms} M x {per} mode/theta pairs "
            f"({len(modes)} modes, {thetas} thetas)")


def expand_cells(sweep: SweepConfig, max_cells: int | None = MAX_CELLS) -> list[Cell]:
    """The grid, in run order: model, task, M, then Full Parallel first and each theta. A grid
    of more than `max_cells` cells is refused (None: no bound)."""
    size, how = grid_size(sweep)
    if max_cells is not None and size > max_cells:
        raise SweepConfigError("grid", size, "", message=(
            f"the sweep's grid has {size:,} cells ({how}), more than --max-cells {max_cells:,}: "
            f"shorten the lists, or pass --max-cells {size} to run them all"))
    cells: list[Cell] = []
    explicit = tuple(sorted(set(sweep.settings) | {"mode", "theta", "max_seqs"}))
    for model in sweep.models:
        for task in sweep.tasks:
            for m in sweep.max_seqs:
                for mode in sweep.modes:
                    is_fp = mode in NON_BRANCHING
                    for theta in [sweep.thetas[0]] if is_fp else sweep.thetas:
                        grid = {"mode": mode, "max_seqs": m}
                        if not is_fp:  # Full Parallel and DeepConf never branch
                            grid["theta"] = theta
                        config = EagerConfig.from_mapping({**sweep.settings, **grid})
                        names = tuple(n for n in explicit if not (n == "theta" and is_fp))
                        out = (sweep.output / model_slug(model) / task.name
                               / cell_dir_name(config))
                        cells.append(Cell(model, task, config, out, names))
    unique: dict[Path, Cell] = {}
    for cell in cells:  # the same cell twice (a repeated list entry) runs once
        unique.setdefault(cell.output_dir, cell)
    return list(unique.values())



def check_tasks(sweep: SweepConfig) -> None:
    """Before any cell (a dry run too): every data-file task is read and checked as its cells'
    `eager-eval run` will read it (rows, fields, ids); a missing file is one line naming it,
    not a failure of every cell. `data_dir` must be a directory."""
    from eager_eval.pipeline.task_data import load_data_task

    if sweep.data_dir is not None and not sweep.data_dir.is_dir():
        raise SweepConfigError("data_dir", str(sweep.data_dir), "an existing directory (it "
                               "holds aime25.jsonl and gpqa_diamond.csv)")
    for task in sweep.tasks:
        if task.kind == "file" and task.data is not None:
            try:
                load_data_task(str(task.data), task.answer_type, task.problem_field,
                               task.answer_field or "answer", sweep.limit)
            except UserError as err:
                raise SweepConfigError("tasks", str(task.data), "", message=(
                    f"task {task.name}: {err}")) from None


# --- a cell's command line ------------------------------------------------------------------
def _option_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return str(value)


def run_command_line(model: str, data: TaskSpec, config: EagerConfig, output_dir: Path, *,
                     resume: bool = True, limit: int | None = None,
                     settings: Sequence[str] = ("mode", "theta", "max_seqs"),
                     run_args: Mapping[str, Any] | None = None) -> list[str]:
    """The `eager-eval` arguments of one cell (without the program name).

    `run --model M --data FILE ...` for a data file, `demo --model M --modes MODE ...` for the
    demo problems. EagerConfig fields become `--field-name value` (the CLI's flags share the
    config's names); `run_args` entries become `--key value`, `--key` for true, `--no-key` for
    false, nothing for null, and the option repeated for a list.
    """
    values = config.to_dict()
    if data.kind == "demo":
        args = ["demo", "--model", model, "--modes", config.mode.value, "--output", str(output_dir)]
        settings = [n for n in settings if n != "mode"]  # demo takes --modes, not --mode
    else:
        if data.data is None:
            raise ValueError(f"task {data.name!r} has no data file yet (prepare_task first)")
        args = ["run", "--model", model, "--data", str(data.data), "--answer-type", data.answer_type,
                "--output", str(output_dir)]
        if data.problem_field:
            args += ["--problem-field", data.problem_field]
        if data.answer_field:
            args += ["--answer-field", data.answer_field]
    for name in settings:
        args += [f"--{name.replace('_', '-')}", _option_value(values[name])]
    if limit is not None:
        args += ["--limit", str(limit)]
    for key, value in (run_args or {}).items():
        flag = str(key).replace("_", "-")
        if value is True:
            args.append(f"--{flag}")
        elif value is False:
            args.append(f"--no-{flag}")
        elif isinstance(value, list):
            for item in value:
                args += [f"--{flag}", _option_value(item)]
        elif value is not None:
            args += [f"--{flag}", _option_value(value)]
    if resume:
        args.append("--resume")
    return args
