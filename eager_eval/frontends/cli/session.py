"""Running `eager-eval run` / `demo`: check, lock, load, run each method, write.

A `Session` is what one command runs: a model, a task (`task_data.Task`), each method's
EagerConfig, the engine options, an output directory. `run_session` does, in the order
docs/RELIABILITY.md relies on: every check that needs no model, the output directory's lock,
a resume's fingerprints (`store.RunTrees.check`), the model (`engines.load_engine`), the
prompts (the one prompt layer), theta=auto's calibration (once for every method), then each
method as one pool through `pipeline.pool.run_pool` (trees saved as they finish), and the run
directory (`outputs.write_run_dir`). The CLI's own parts are the run directory, Ctrl-C's
message and the theta=auto file that lets --resume skip the warm-up.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from eager_eval.common.files import OutputLock, WriteError, check_output_dir
from eager_eval.core.config import EagerConfig
from eager_eval.engines.registry import EngineOptions
from eager_eval.pipeline.prompts import Prompt, PromptSettings
from eager_eval.pipeline.store import RunTrees, pool_fingerprint
from eager_eval.pipeline.task_data import Task

if TYPE_CHECKING:
    from eager_eval.engines.registry import Engine
    from eager_eval.pipeline.calibration import Calibration
    from eager_eval.pipeline.outputs import MethodRun
    from eager_eval.pipeline.pool import PoolPrompt

PROG = "eager-eval"
EXIT_INTERRUPTED = 130

__all__ = ["Session", "run_session", "CALIBRATION_FILE", "EXIT_INTERRUPTED"]

CALIBRATION_FILE = "theta_auto.json"
"""OUTPUT/theta_auto.json: the theta=auto calibration of a run, written before its first tree,
so that --resume continues with the theta the stored trees were grown with."""


@dataclass
class Session:
    """What one command runs: a model, a task, the methods' configs, an output directory."""

    model: str
    task: Task
    configs: list[EagerConfig]
    """One per method; they differ only in mode (theta may be `auto`)."""
    output: Path
    resume: bool
    engine: EngineOptions
    prompt_settings: PromptSettings
    """Chat template and enable_thinking (--chat/--no-chat, --thinking/--no-thinking)."""
    argv: list[str]

    @property
    def trees(self) -> RunTrees:
        return RunTrees(self.output / "trees", self.resume)

    @property
    def prompts(self) -> list[Prompt]:
        return [Prompt(text) for text in self.task.prompt_texts]

    def fingerprint(self, config: EagerConfig) -> dict[str, Any]:
        targets = [p.target for p in self.task.problems]
        return pool_fingerprint(self.model, self.engine, self.prompt_settings, config,
                                self.prompts, targets)


def run_session(session: Session, *, progress: bool = True) -> tuple[list["MethodRun"], Path] | int:
    """Check the input, lock the output directory, load the model, run every method, write
    the outputs.

    Nothing is written into the output directory (beyond its lock file, removed again) until
    the model, device, settings and prompts have passed their checks, so a start that fails
    leaves it as it was, and a later --resume is not refused over a run that never started.
    Returns (method runs, results.json path), or EXIT_INTERRUPTED after Ctrl-C: the trees
    finished so far are on disk, and the message gives the command that resumes.
    """
    session.engine.check(session.model)  # model name, device: no model loads for a typo
    for note in session.task.warnings:
        print(f"warning: {note}", file=sys.stderr)
    check_output_dir(session.output)
    with OutputLock(session.output):  # a second run into this directory stops here
        # results.json must take this run's entries without losing others: checked now, not
        # after the generation
        from eager_eval.pipeline.outputs import check_run_dir

        check_run_dir(session.output, session.model, session.task.name,
                      [config.mode.value for config in session.configs])
        calibration = _recorded_calibration(session) if session.resume else None
        _check_resume(session, calibration)  # before the model loads, where theta is known
        engine = _load_engine(session)
        prompts = _pool_prompts(engine, session)
        if calibration is None and session.configs[0].theta_is_auto:
            calibration = _calibrate(session, engine, prompts)
            _check_resume(session, calibration)
        return _run_and_write(session, engine, prompts, calibration, progress)


def _load_engine(session: Session) -> "Engine":
    from eager_eval.engines.registry import load_engine

    # the configs differ only in mode: one engine serves all (vLLM fixes top-K at start-up)
    return load_engine(session.model, session.engine, session.configs[0])


def _check_resume(session: Session, calibration: "Calibration | None") -> None:
    """A resume from other settings fails here (reads tree-file headers only). theta=auto's
    trees can be checked once its value is known."""
    for config in session.configs:
        if config.theta_is_auto:
            if calibration is None:
                continue
            config = config.replace(theta=calibration.theta)
        session.trees.check(config.mode.value, session.fingerprint(config))


def _pool_prompts(engine: "Engine", session: Session) -> list["PoolPrompt"]:
    """The prompts' token ids (the one prompt layer), once the settings passed the model's own
    checks (vocabulary, end-of-thinking marker); a prompt that fills the context is refused,
    one that leaves less room than --max-new-tokens is warned about."""
    from eager_eval.pipeline.pool import Label, pool_prompt
    from eager_eval.pipeline.prompts import PromptEncoder, room_warning

    for config in session.configs:
        engine.verify(config)
    encoder = PromptEncoder.for_engine(engine, session.prompt_settings,
                                       think_end=session.configs[0].think_end)
    task = session.task
    prompts = [pool_prompt(encoder, prompt, problem.id,
                           label=Label(problem.target, task.answer_type))
               for problem, prompt in zip(task.problems, session.prompts, strict=True)]
    warning = room_warning([len(p.input.tokens) for p in prompts],
                           max(config.max_new_tokens for config in session.configs),
                           encoder.context_length, session.model, "--max-new-tokens")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return prompts


def _run_and_write(session: Session, engine: "Engine", prompts: Sequence["PoolPrompt"],
                   calibration: "Calibration | None",
                   progress: bool) -> tuple[list["MethodRun"], Path] | int:
    from eager_eval.pipeline.outputs import MethodRun, command_line, write_run_dir
    from eager_eval.pipeline.pool import Pool, run_pool
    from eager_eval.pipeline.progress import RunProgress

    _write_calibration(session, calibration)  # before the first tree: --resume reads it back
    runs = []
    try:
        with RunProgress(enabled=progress) as bars:
            for config in session.configs:
                pool = Pool(config.mode.value, prompts, config, session.model, session.engine,
                            session.prompt_settings)
                outcome = run_pool(pool, engine, trees=session.trees, calibration=calibration,
                                   progress=lambda name, n, stored: bars.method(name, n,
                                                                                stored=stored))
                runs.append(MethodRun.of(outcome))
    except KeyboardInterrupt:
        saved = ", ".join(f"{config.mode.value}: {_trees_saved(session, config)}"
                          for config in session.configs)
        print(f"\ninterrupted; finished trees are saved under {session.output / 'trees'} "
              f"({saved}).\nContinue with: {_resume_command(session.argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        path = write_run_dir(
            session.output, runs, session.task.problems, answer_type=session.task.answer_type,
            command=command_line(session.argv), model=session.model, task=session.task.name,
            engine_info=engine.info(), extra={"data": session.task.info, **(
                {"theta_auto": calibration.to_dict()} if calibration else {})},
            warn=lambda message: print(f"warning: {message}", file=sys.stderr),
        )
    except WriteError as err:  # a disk that filled up, a file system turned read-only
        raise WriteError(f"{err}; every tree is kept in {session.output / 'trees'}: once the "
                         f"directory can be written, run {_resume_command(session.argv)} to "
                         "write the results (nothing is generated again)", err) from None
    return runs, path


def _trees_saved(session: Session, config: EagerConfig) -> int:
    path = session.trees.path(config.mode.value)
    if not path.is_file():
        return 0
    with open(path, "rb") as fh:
        return max(sum(1 for _ in fh) - 1, 0)


def _resume_command(argv: Sequence[str]) -> str:
    args = list(argv)
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join([PROG, *args])


def _recorded_calibration(session: Session) -> "Calibration | None":
    """--resume of a theta=auto run: the recorded theta, no warm-up (if one was recorded)."""
    from eager_eval.pipeline.calibration import Calibration
    from eager_eval.pipeline.store import StoreError

    path = session.output / CALIBRATION_FILE
    if not session.configs[0].theta_is_auto or not path.is_file():
        return None  # interrupted before the calibration ended: calibrate again
    try:
        calibration = Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as err:
        raise StoreError(f"{path} is unreadable ({err}); delete it to calibrate theta "
                         "again") from None
    print(f"theta=auto: {calibration.theta:g}, recorded in {path}", file=sys.stderr)
    return calibration


def _calibrate(session: Session, engine: "Engine", prompts: Sequence["PoolPrompt"]) -> "Calibration":
    """theta=auto: the warm-up on this task's prompts, once for every method."""
    import time

    from eager_eval.pipeline.pool import calibrate

    started = time.perf_counter()
    config = session.configs[0]
    notes: list[str] = []
    _, calibration = calibrate(engine, config, prompts, warn=notes.append)
    assert calibration is not None
    print(f"theta=auto: {calibration.theta:g} nats, the {calibration.quantile:.2%} quantile of "
          f"{calibration.n_entropies} top-{config.entropy_k} entropies "
          f"({calibration.n_prompts} prompts x {calibration.warmup_tokens} tokens, "
          f"{time.perf_counter() - started:.1f} s)", file=sys.stderr)
    for note in notes:  # too few entropies
        print(f"warning: {note}", file=sys.stderr)
    return calibration


def _write_calibration(session: Session, calibration: "Calibration | None") -> None:
    """OUTPUT/theta_auto.json, where theta was calibrated (the run's first write)."""
    from eager_eval.common.files import atomic_write

    if calibration is not None:
        session.output.mkdir(parents=True, exist_ok=True)
        atomic_write(session.output / CALIBRATION_FILE,
                     json.dumps(calibration.to_dict(), indent=2) + "\n")
