"""Running `eager-eval run` / `demo`: check, lock, load, encode, run each method, write.

A `Session` is what one command runs: a model, a task (`task_data.Task`), each method's
EagerConfig, an output directory. `run_session` does the work in the order docs/RELIABILITY.md
relies on: every check that needs no model, the output directory's lock, a resume's
fingerprints, the model, the checks that need it, the prompts (through the one prompt layer,
`eager_eval.pipeline.prompts`), theta=auto's calibration, then each method's run, whose trees are saved
as they finish (`store.JsonlTreeStore`), and the run directory (`outputs.write_run_dir`: one
`record.PromptRecord` per prompt, graded once).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from eager_eval.core.config import EagerConfig, Mode
from eager_eval.common.files import OutputLock, check_output_dir
from eager_eval.pipeline.prompts import ChatMode, Prompt, PromptEncoder, PromptSettings
from eager_eval.pipeline.task_data import Task

if TYPE_CHECKING:
    from eager_eval.pipeline.calibration import Calibration
    from eager_eval.engines.registry import Engine
    from eager_eval.pipeline.outputs import MethodRun
    from eager_eval.pipeline.progress import RunProgress
    from eager_eval.core.runner import PromptInput
    from eager_eval.pipeline.store import JsonlTreeStore

PROG = "eager-eval"
EXIT_INTERRUPTED = 130

__all__ = ["Session", "run_session", "CALIBRATION_FILE", "EXIT_INTERRUPTED"]


@dataclass
class Session:
    """What one command runs: a model, a task, the methods' configs, an output directory."""

    model: str
    task: Task
    configs: list[EagerConfig]
    output: Path
    resume: bool
    device: str
    dtype: str | None
    max_rows: int
    threads: int | None
    prompt_settings: PromptSettings
    """Chat template and enable_thinking (--chat/--no-chat, --thinking/--no-thinking)."""
    argv: list[str]
    backend: str = "hf"
    engine_args: dict[str, Any] = field(default_factory=dict)
    """vLLM engine keyword arguments (`--engine-arg KEY=VALUE`)."""
    auto_theta: bool = False
    """--theta auto: the configs hold a placeholder theta until run_session calibrates it."""
    calibration: "Calibration | None" = None
    """The theta=auto calibration the run uses (measured now, or read back on --resume)."""


def _base_fingerprint(session: Session) -> dict[str, Any]:
    from eager_eval import __version__

    return {
        "model": session.model,
        **session.task.fingerprint,
        "backend": session.backend,
        "dtype": session.dtype or "auto",
        "device": session.device.split(":")[0] if session.backend == "hf" else "vllm",
        "chat": session.prompt_settings.chat is not ChatMode.OFF,  # a bool before chat=auto
        "thinking": session.prompt_settings.enable_thinking,
        "eager_eval": __version__,
    }


def _tree_files(session: Session) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Each method's tree file under OUTPUT/trees and the fingerprint it must hold."""
    base = _base_fingerprint(session)
    return {config.mode.value: (session.output / "trees" / f"{config.mode.value}.jsonl",
                                {**base, "settings": config.to_dict()})
            for config in session.configs}


def _check_resume(session: Session) -> None:
    """A resume from other settings fails here, before a model loads (reads headers only)."""
    from eager_eval.pipeline.store import check_resumable

    if session.resume:
        for path, fingerprint in _tree_files(session).values():
            check_resumable(path, fingerprint)


def _open_stores(session: Session):
    """One JsonlTreeStore per method: the run's first write, once model and data are checked.
    Without --resume an earlier run's trees are replaced (atomically) by a new header."""
    from eager_eval.pipeline.store import JsonlTreeStore

    stores = {}
    for mode, (path, fingerprint) in _tree_files(session).items():
        if path.exists() and not session.resume:
            with open(path, "rb") as fh:
                n_trees = max(sum(1 for _ in fh) - 1, 0)
            if n_trees:
                print(f"note: {path} holds {n_trees} trees of an earlier run; starting over "
                      "(pass --resume to continue that run instead)", file=sys.stderr)
        stores[mode] = JsonlTreeStore(path, fingerprint, start_over=not session.resume)
    return stores


def _check_before_loading(session: Session) -> None:
    """Every check that needs no model, so a bad name, path or device costs no load and leaves
    no trace: the model name (and a GGUF's magic), the output directory, the device, the dtype."""
    from eager_eval.engines.models import check_device, dtype_name, resolve_model

    resolve_model(session.model)
    check_output_dir(session.output)
    if session.backend == "hf":
        dtype_name(session.dtype)
        check_device(session.device)


def _load_engine(session: Session) -> "Engine":
    from eager_eval.engines import registry as engines
    from eager_eval.engines.models import gguf_cache_dir, resolve_model

    resolved = resolve_model(session.model)  # fails fast, before torch is imported
    _set_cpu_threads(session)
    if resolved.is_gguf and not (gguf_cache_dir(resolved) / "config.json").is_file():
        print(f"first use of {session.model}: converting its GGUF once (about 30-60 s) ...",
              file=sys.stderr, flush=True)
    if session.backend == "vllm":  # the configs differ only in mode: one engine serves all
        return engines.load_engine(session.model, backend="vllm", dtype=session.dtype,
                                   config=session.configs[0], **session.engine_args)
    return engines.load_engine(session.model, device=session.device, dtype=session.dtype,
                               max_rows=session.max_rows)


def _set_cpu_threads(session: Session) -> None:
    """--threads N, else on a CPU the free cores (eager_eval.engines.threads): torch's default of one
    spinning thread per core is slow on a machine other jobs keep busy."""
    if session.backend != "hf" or (session.threads is None
                                   and not session.device.startswith("cpu")):
        return
    import torch

    from eager_eval.engines.threads import default_threads

    threads = session.threads or default_threads(torch.get_num_threads())
    torch.set_num_threads(threads)
    print(f"torch threads: {threads}" + ("" if session.threads else " (free CPUs; set with "
          "--threads N)"), file=sys.stderr)


def _resume_command(argv: Sequence[str]) -> str:
    args = list(argv)
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join([PROG, *args])


def run_session(session: Session, *, progress: bool = True) -> tuple[list["MethodRun"], Path] | int:
    """Check the input, lock the output directory, load the model, run every method, write
    the outputs.

    Nothing is written into the output directory (beyond its lock file, removed again) until
    the model, device, settings and prompts have passed their checks, so a start that fails
    leaves it as it was, and a later --resume is not refused over a run that never started.
    Returns (method runs, results.json path), or EXIT_INTERRUPTED after Ctrl-C: the trees
    finished so far are on disk, and the message gives the command that resumes.
    """
    _check_before_loading(session)
    with OutputLock(session.output):  # a second run into this directory stops here
        if session.auto_theta and session.resume:
            _reuse_calibration(session)  # the theta the stored trees were grown with
        if not session.auto_theta:
            _check_resume(session)
        engine = _load_engine(session)
        prompts = _encode_prompts(engine, session)
        if session.auto_theta:  # theta is part of the trees' fingerprint: calibrate first
            _calibrate(session, engine, prompts)
            _check_resume(session)
        return _run_and_write(session, engine, prompts, progress)


def _run_and_write(session: Session, engine: "Engine", prompts: Sequence["PromptInput"],
                   progress: bool) -> tuple[list["MethodRun"], Path] | int:
    from eager_eval.pipeline.outputs import command_line, write_run_dir
    from eager_eval.pipeline.progress import RunProgress

    _write_calibration(session)  # before the first tree: --resume reads it back
    stores = _open_stores(session)
    try:
        with RunProgress(enabled=progress) as bars:
            runs = [_run_method(engine, prompts, session.task, config,
                                stores[config.mode.value], bars, _decoder(engine))
                    for config in session.configs]
    except KeyboardInterrupt:
        saved = ", ".join(f"{name}: {len(store)}" for name, store in stores.items())
        print(f"\ninterrupted; finished trees are saved under {session.output / 'trees'} "
              f"({saved}).\nContinue with: {_resume_command(session.argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for store in stores.values():
            store.close()
    path = write_run_dir(
        session.output, runs, session.task.problems, answer_type=session.task.answer_type,
        command=command_line(session.argv), model=session.model, task=session.task.name,
        engine_info=engine.info(), extra={"data": session.task.info, **(
            {"theta_auto": session.calibration.to_dict()} if session.calibration else {})},
        warn=lambda message: print(f"warning: {message}", file=sys.stderr),
    )
    return runs, path


def _decoder(engine: "Engine") -> Any:
    """The tokenizer's decode (special tokens dropped): the text around each fork."""
    tokenizer = engine.tokenizer
    return lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)


CALIBRATION_FILE = "theta_auto.json"
"""OUTPUT/theta_auto.json: the theta=auto calibration of a run, written before its first tree,
so that --resume continues with the theta the stored trees were grown with."""


def _reuse_calibration(session: Session) -> None:
    """--resume of a theta=auto run: the recorded theta, no warm-up (if one was recorded)."""
    from eager_eval.pipeline.calibration import Calibration
    from eager_eval.pipeline.store import StoreError

    path = session.output / CALIBRATION_FILE
    if not path.is_file():
        return  # interrupted before the calibration ended: calibrate again
    try:
        calibration = Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as err:
        raise StoreError(f"{path} is unreadable ({err}); delete it to calibrate theta "
                         "again") from None
    _use_calibration(session, calibration)
    print(f"theta=auto: {calibration.theta:g}, recorded in {path}", file=sys.stderr)


def _calibrate(session: Session, engine: "Engine", prompts: Sequence["PromptInput"]) -> None:
    """theta=auto: the warm-up (eager_eval.pipeline.calibration) on this task's prompts."""
    from eager_eval.pipeline.calibration import calibrate_theta

    started = time.perf_counter()
    calibration = calibrate_theta(engine.new_backend, [p.tokens for p in prompts],
                                  session.configs[0])
    _use_calibration(session, calibration)
    print(f"theta=auto: {calibration.theta:g} nats, the {calibration.quantile:.2%} quantile of "
          f"{calibration.n_entropies} top-{session.configs[0].entropy_k} entropies "
          f"({calibration.n_prompts} prompts x {calibration.warmup_tokens} tokens, "
          f"{time.perf_counter() - started:.1f} s)", file=sys.stderr)


def _write_calibration(session: Session) -> None:
    """OUTPUT/theta_auto.json, where theta was calibrated (the run's first write)."""
    from eager_eval.pipeline.outputs import atomic_write

    if session.calibration is not None:
        session.output.mkdir(parents=True, exist_ok=True)
        atomic_write(session.output / CALIBRATION_FILE,
                     json.dumps(session.calibration.to_dict(), indent=2) + "\n")


def _use_calibration(session: Session, calibration: "Calibration") -> None:
    session.configs = [c.replace(theta=calibration.theta) for c in session.configs]
    session.calibration = calibration
    session.auto_theta = False


def _encode_prompts(engine: "Engine", session: Session) -> list["PromptInput"]:
    """The prompts' token ids (the one prompt layer), once the settings passed the model's own
    checks (vocabulary, end-of-thinking marker); a prompt that fills the context is refused,
    one that leaves less room than --max-new-tokens is warned about."""
    from eager_eval.pipeline.prompts import room_warning

    for config in session.configs:
        engine.verify(config)
    encoder = PromptEncoder.for_engine(engine, session.prompt_settings,
                                       think_end=session.configs[0].think_end)
    prompts = [encoder.encode(Prompt(text), name=repr(problem.id))
               for problem, text in zip(session.task.problems, session.task.prompt_texts,
                                        strict=True)]
    warning = room_warning([len(p.tokens) for p in prompts],
                           max(config.max_new_tokens for config in session.configs),
                           encoder.context_length, session.model, "--max-new-tokens")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return prompts


def _run_method(engine: "Engine", prompts: Sequence["PromptInput"], task: Task,
                config: EagerConfig, store: "JsonlTreeStore", bars: "RunProgress",
                decode: Any = None) -> "MethodRun":
    """One method over all prompts; each tree is on disk the moment it is finished; each
    prompt's record graded once, the metrics counted from its flags."""
    from eager_eval.pipeline.answers import labels_verifier
    from eager_eval.pipeline.outputs import method_run
    from eager_eval.core.runner import run

    stored = list(store)
    bar = bars.method(config.mode.value, len(prompts), stored=stored)
    targets = [p.target for p in task.problems]

    result = run(
        prompts, bar.watch(engine.new_backend(config)), config,
        verifier=labels_verifier(targets, task.answer_type) if config.mode is Mode.EAGER else None,
        store=store, on_tree_done=bar.tree_done,  # the runner saves each tree as it ends
    )
    return method_run(config, result, task.problems, task.answer_type,
                      prompt_texts=task.prompt_texts, decode=decode, resumed_trees=len(stored))
