"""The options of `eager-eval run` and `demo`: their parsers, and what the flags become
(EagerConfig, EngineOptions, PromptSettings).

Its own module, below main.py and the sweep, because both build these parsers: main.py for the
commands, the sweep to check a config's `run_args` against the very parser its cells will meet
(frontends/cli/sweep_grid.py)."""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import textwrap
from enum import Enum
from typing import Any, Callable, Sequence

from eager_eval.common.settings import RENAMED, positive_int
from eager_eval.core.config import ConfigError, EagerConfig, Mode, is_auto
from eager_eval.core.sampling import setting_fields
from eager_eval.engines.registry import ENGINES, EngineOptions, engine_names
from eager_eval.pipeline.prompts import ChatMode, PromptSettings

PROG = "eager-eval"


class UsageError(Exception):
    """argparse's complaint, raised instead of exiting so `main` can return 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  (argparse calls sys.exit)
        raise UsageError(f"{PROG}: error: {message}")  # one form for every bad input


# --- EagerConfig flags -------------------------------------------------------------------------


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (what the config's authors wrote, in the class
    or a base that declares it), for --help."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def add_config_arguments(parser: argparse.ArgumentParser, *, exclude: Sequence[str] = (),
                         defaults: dict[str, Any] | None = None) -> None:
    """One `--flag` per EagerConfig field (underscores as dashes); values stay strings
    ('inf', 'none', '0.6') for `EagerConfig.from_mapping`; an unset flag is None."""
    docs = _field_docs(EagerConfig)
    group = parser.add_argument_group(
        "EAGer settings", "every EagerConfig field; 'none' and 'inf' are accepted where they mean "
        "something (--percentile none = fixed theta, --theta inf = never branch)")
    defaults = defaults or {}
    for f in setting_fields(EagerConfig):
        if f.name in exclude:
            continue
        default = defaults.get(f.name, f.default)
        help_text = docs.get(f.name, "")
        if isinstance(f.default, Enum) and not help_text:
            help_text = "one of: " + ", ".join(m.value for m in type(f.default))
        default = default.value if isinstance(default, Enum) else default
        help_text = help_text.replace("%", "%%")
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                           help=f"{help_text} (default: {default})")
    for old, new in RENAMED.items():  # accepted, with a warning naming the new flag
        group.add_argument(f"--{old.replace('_', '-')}", dest=old, default=None,
                           help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None,
                     **fixed: Any) -> EagerConfig:
    """EagerConfig from the flags the user set, over `defaults`, with `fixed` on top."""
    values = dict(defaults or {})
    names = [*EagerConfig.field_names(), *RENAMED]
    values.update({name: getattr(args, name) for name in names
                   if getattr(args, name, None) is not None})
    for old, new in RENAMED.items():  # Python hides the DeprecationWarning from a CLI user
        if old in values:
            print(f"warning: --{old} is deprecated: it is now --{new.replace('_', '-')}",
                  file=sys.stderr)
    values.update(fixed)
    return EagerConfig.from_mapping(values)  # theta may be auto: calibrated by the pipeline


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument("--backend", choices=engine_names(), default="hf",
                       help="; ".join(f"{spec.name}: {spec.description}" for spec in
                                      ENGINES.values()) + " (default: hf)")
    group.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                       dest="engine_arg", help="vllm: one engine keyword argument, the value read "
                       "as YAML (repeatable), e.g. --engine-arg gpu_memory_utilization=0.85")
    group.add_argument("--device", default="auto", help="auto (default: CUDA when available, "
                       "then MPS, then the CPU), cpu, cuda, cuda:N or mps")
    group.add_argument("--dtype", default=None, help="auto (default: float32 on CPU, bf16 on "
                       "CUDA), float32, bfloat16 or float16")
    group.add_argument("--max-rows", type=_rows_or_auto, default="auto", metavar="N",
                       help="most sequences decoded together in one batch (default: auto, as "
                       "many as the device's free memory holds at prompt + max new tokens); "
                       "each prompt's tree reserves its cap (M in eager modes), later prompts "
                       "wait")
    group.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                       help="CPU threads for torch (default on a CPU: the CPUs not kept busy by "
                       "other processes, i.e. usable CPUs minus the 1-minute load average, at "
                       "least 1, at most torch's own default)")
    group.add_argument("--replicas", type=_positive_int, default=1, metavar="N",
                       help="engine replicas, each a Ray actor with its own engine (its own "
                       "GPU, or CPU threads), under one budget pool; needs pip install "
                       "'eager-eval[ray]'; RAY_ADDRESS joins a cluster (docs/SCALE.md)")
    group.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                       help="apply the model's chat template (default: when it has one; --chat "
                       "requires one, --no-chat sends the plain text)")
    group.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=True,
                       help="enable_thinking for templates that read it, e.g. Qwen3 (default: on)")


def add_output_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--output", "-o", required=required, metavar="DIR",
                        help="run directory: results.json, <method>.jsonl, trees/ (resume)"
                        + ("" if required else " (default: runs/demo-<timestamp>)"))
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --output: finished trees are read "
                        "back, not generated again (the settings must be the same)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The engine options of --backend, --device, --dtype, --max-rows, --threads,
    --replicas and the --engine-arg KEY=VALUE pairs (checked once, by EngineOptions)."""
    import yaml

    engine_args: dict[str, Any] = {}
    for pair in args.engine_arg:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--engine-arg", pair, "KEY=VALUE, e.g. gpu_memory_utilization=0.85")
        try:
            engine_args[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            engine_args[key.strip()] = value
    return EngineOptions(args.backend, args.device, args.dtype, args.max_rows,
                         args.threads or "auto", engine_args, getattr(args, "replicas", 1))


def prompt_settings(args: argparse.Namespace) -> PromptSettings:
    """--chat / --no-chat (unset: auto) and --thinking / --no-thinking."""
    chat = ChatMode.AUTO if args.chat is None else ChatMode.parse(args.chat)
    return PromptSettings(chat, args.thinking)


def _rows_or_auto(text: str) -> int | str:
    """argparse's type for --max-rows: auto, or a count."""
    return "auto" if is_auto(text) else _positive_int(text)


def _positive_int(text: str) -> int:
    """argparse's type for counts (the message of `settings.positive_int`, argparse's way)."""
    try:
        return positive_int(text, "value")
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).replace("value must be", "must be")) from None


# --- demo --------------------------------------------------------------------------------------

DEMO_MODEL = "smollm2-135m"
DEMO_LIMIT = 8
DEMO_DEFAULTS: dict[str, Any] = {
    "max_seqs": 5,
    "max_new_tokens": 96,
    "theta": 2.6,
    "percentile": 99.0,
    "temperature": 0.6,
    "think_end": None,  # SmolLM2 is not a thinking model: no marker ends branching
}
"""Demo settings, sized for a 2-core CPU (the paper's M = 32 and 32k tokens take hours there):
8 problems (two of each level), M = 5, 96 tokens, all four methods in about 2.5 minutes.

Chosen so that both halves of the method show on a 135M model (measured, seed 0, on the
reference 2-core VM; benchmarks/RESULTS.md): EAGer-init ends with 1-5 sequences per prompt and
2 of 8 prompts hit M, so EAGer-adapt moves unspent budget to them (8 sequences) and still
decodes about a third fewer tokens than Full Parallel. Measured alternatives at theta 2.6:
M = 4 put 3 prompts at the cap, and EAGer-adapt then spent nearly all of the budget (5%
saved); M = 6 or 8 put none there and nothing moved. Above theta 2.65 forks become rare:
`--theta auto` measures 2.68 here (the 99% quantile of the warm-up's entropies,
docs/THETA.md), where EAGer-init ended with 1-2 sequences per prompt. The paper's 2.0 is too low
for this model: its top-20 entropies run high (median 1.1, 99th percentile 2.67 of
ln 20 = 3.0 nats)."""
DEMO_THREADS = 1
"""Torch threads benchmarks/savings.py pins, so its timings compare across runs. The demo itself
uses the free-CPU default of `eager_eval.engines.threads` (1 on a busy machine, more on an idle one)."""
DEMO_MODES = ("full_parallel", "eager_init", "eager_adapt", "eager")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Offline demo: the embedded SmolLM2-135M on generated arithmetic problems; runs every "
        "method on the same prompts with the same M and seed and prints the comparison table.")
    parser.add_argument("--limit", type=_positive_int, default=DEMO_LIMIT, metavar="N",
                        help=f"demo problems (default: {DEMO_LIMIT}; levels cycle 1-4)")
    parser.add_argument("--problem-seed", type=int, default=0, metavar="S",
                        help="seed of the generated problems (default: 0)")
    parser.add_argument("--modes", default=",".join(DEMO_MODES), metavar="LIST",
                        help=f"comma-separated methods (default: {','.join(DEMO_MODES)})")
    parser.add_argument("--model", default=DEMO_MODEL, help=f"model (default: {DEMO_MODEL})")
    add_output_arguments(parser, required=False)
    add_config_arguments(parser, exclude=("mode",), defaults=DEMO_DEFAULTS)
    add_engine_arguments(parser)


def parse_modes(text: str) -> list[str]:
    modes = [m.strip().lower() for m in text.split(",") if m.strip()]
    known = [m.value for m in Mode]
    for m in modes:
        if m not in known:
            raise ConfigError("modes", m, f"a comma-separated list of: {', '.join(known)}")
    if not modes:
        raise ConfigError("modes", text, f"a comma-separated list of: {', '.join(known)}")
    return list(dict.fromkeys(modes))  # once each, in the order given


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run one method on a data file and write DIR/results.json and DIR/<method>.jsonl. Trees "
        "are saved as they finish (DIR/trees/<method>.jsonl): after Ctrl-C or a crash, the same "
        "command with --resume continues without redoing them. Running other methods into the "
        "same DIR adds them to results.json, with savings against full_parallel.\n\n"
        "Data: .jsonl (one object a line) or .csv. --answer-type math reads fields 'problem' "
        "and 'answer' (see --problem-field/--answer-field); --answer-type choice reads "
        "'question', 'A', 'B', 'C', 'D' and 'answer' (the correct letter).")
    parser.add_argument("--model", required=True,
                        help="smollm2-135m, a .gguf file, a save_pretrained directory or a hub id")
    parser.add_argument("--data", required=True, metavar="FILE", help="a .jsonl or .csv file")
    parser.add_argument("--answer-type", choices=["math", "choice"], default="math",
                        help="math (math-verify equivalence) or choice (letter A-D); default math")
    parser.add_argument("--problem-field", default=None, metavar="NAME",
                        help="field holding the question (default: problem; choice: question)")
    parser.add_argument("--answer-field", default="answer", metavar="NAME",
                        help="field holding the target (default: answer)")
    parser.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                        help="only the first N rows")
    add_output_arguments(parser, required=True)
    add_config_arguments(parser)
    add_engine_arguments(parser)


COMMAND_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "run": add_run_arguments, "demo": add_demo_arguments}
"""The options of each command a sweep's cell runs."""
