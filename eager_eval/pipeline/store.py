"""Finished trees on disk: the CLI's --resume and trees=DIR, one fingerprint for both.

`JsonlTreeStore` is the runner's TreeStore on disk, one finished tree per line;
`pool_fingerprint` is what a pool's trees depend on; `RunTrees` (the CLI's run directory) and
`TreesDir` (lm-eval's and Inspect's `trees=DIR`) are the two places a front end keeps them.

A long run must not lose what it generated when it crashes or is stopped with Ctrl-C: every
tree is appended as one JSON line and fsynced the moment it finishes (the runner's
`on_tree_done`), and a later run with the same settings reads the file back and skips those
trees (the runner asks `get` before generating one).

The first line is a header holding a fingerprint: every setting that changes the trees (model,
data, mode, each EagerConfig field, prompt count...). Trees made under other settings would
silently mix two experiments, so opening with a different fingerprint is an error that names
each differing key (nested ones as `settings.theta`) with both values. A new file is born whole:
its header is written to a temporary sibling and renamed into place. A crash can leave the last
line half-written; it is dropped with a warning (and cut off the file, so the next append starts
on a clean line). Any other unreadable line is an error: that file was not written by a crash of
this store.

No torch or transformers here: the CLI checks a resume before it loads a model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, Iterator, Mapping, Protocol, Sequence

from eager_eval.common.errors import UserError
from eager_eval.common.files import (
    OutputLock,
    WriteError,
    atomic_write,
    check_output_dir,
    os_reason,
)
from eager_eval.common.settings import renamed_settings
from eager_eval.core.config import SCORING_SETTINGS, EagerConfig, Mode
from eager_eval.core.results import TreeResult
from eager_eval.pipeline.prompts import Prompt, PromptSettings

if TYPE_CHECKING:
    from eager_eval.engines.registry import EngineOptions

FORMAT = "eager-eval-trees"
FORMAT_VERSION = 1
_MISSING = object()


class StoreError(ValueError, UserError):
    """A tree file cannot be used; the message names the file and the fix."""


class ResumeMismatchError(StoreError):
    """The tree file was written under other settings than the ones given now."""

    def __init__(self, path: Path, stored: Mapping[str, Any], current: Mapping[str, Any]):
        self.path = path
        stored, current = _flat(stored), _flat(current)
        self.differing = differing_keys(stored, current)
        shown = "; ".join(
            f"{key}: stored {_show(stored, key)}, now {_show(current, key)}"
            for key in self.differing
        )
        super().__init__(
            f"cannot resume from {path}: it was written with other settings ({shown}); "
            "use another --output directory, or drop --resume to start over there"
        )


def _show(values: Mapping[str, Any], key: str) -> str:
    return json.dumps(values[key]) if key in values else "(absent)"


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys ({"settings": {"theta": 1}} -> {"settings.theta": 1}),
    so a mismatch names the one setting that differs, not a whole dict of 19."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing_keys(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ, or that one side lacks, sorted."""
    return sorted(key for key in set(stored) | set(current)
                  if stored.get(key, _MISSING) != current.get(key, _MISSING))


def check_resumable(path: str | os.PathLike[str], fingerprint: Mapping[str, Any]) -> None:
    """Raise StoreError unless the tree file at `path` (if any) can be resumed under
    `fingerprint`: its header must be ours and match. Reads the header only, writes nothing,
    so a front end can check a resume before it loads a model."""
    path = Path(path)
    if not path.is_file():
        return
    try:
        with open(path, "rb") as fh:
            first = fh.readline()
    except OSError as err:
        raise StoreError(f"cannot read the tree file {path}: {os_reason(err)}") from None
    if first.endswith(b"\n"):  # else a header a crash cut short: the store starts that file over
        _check_header(path, first, _normalised(fingerprint))


def _normalised(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """What the header will hold: a JSON round trip (tuples -> lists, inf -> 'inf' upstream)."""
    try:
        return json.loads(json.dumps(dict(fingerprint), sort_keys=True))
    except (TypeError, ValueError) as err:
        raise TypeError(f"the fingerprint must be JSON-serialisable: {err}") from None


class JsonlTreeStore:
    """Finished trees of one run (one method), keyed by (prompt_idx, round), in a JSONL file.

    Implements the runner's `TreeStore`. `put` of a tree already stored is a no-op: the CLI
    stores each tree as it finishes and the runner stores the round's trees again at its end.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: Mapping[str, Any], *,
                 start_over: bool = False, again: str = "run the same command again"):
        """Open (resume) the file at `path`, or start it. `start_over`: replace whatever the
        file holds with a new header, in one rename (never a moment without a file).
        `again`: how the user continues after a failed write (the front end's words, e.g.
        'rerun the command with --resume'), said in that error."""
        self.path = Path(path)
        self.fingerprint = _normalised(fingerprint)
        self.again = again
        self._trees: dict[tuple[int, int], TreeResult] = {}
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not start_over and self.path.is_file() and self.path.stat().st_size > 0:
                self._load()  # may cut a half-written last line (or header) off the file
            if start_over or not self.path.is_file() or self.path.stat().st_size == 0:
                header = {"format": FORMAT, "format_version": FORMAT_VERSION,
                          "fingerprint": self.fingerprint}
                atomic_write(self.path, json.dumps(header, separators=(",", ":")) + "\n")
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            self._size = os.fstat(self._fd).st_size
        except WriteError:
            raise
        except OSError as err:
            raise StoreError(f"cannot open the tree file {self.path}: {os_reason(err)}") from None
        self.resumed = len(self._trees)
        """Trees read back from the file when it was opened."""

    # --- TreeStore --------------------------------------------------------------------------

    def get(self, prompt_idx: int, round_idx: int) -> TreeResult | None:
        return self._trees.get((prompt_idx, round_idx))

    def put(self, tree: TreeResult) -> None:
        key = (tree.prompt_idx, tree.round)
        if key in self._trees:
            return
        self._append(tree.to_dict())  # on disk first: a tree in memory is always on disk too
        self._trees[key] = tree

    # --- the rest -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._trees)

    def __iter__(self) -> Iterator[TreeResult]:
        return iter(self._trees.values())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "JsonlTreeStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _append(self, record: Mapping[str, Any]) -> None:
        """One line, written and fsynced (it survives a crash or power loss, not only Ctrl-C).

        A write the OS refuses (a full disk, a file system turned read-only) is cut back off
        the file where the OS allows it (else a resume drops the torn line) and raised as one
        WriteError naming the file, the reason and how to continue: the trees stored before
        stay, and are not generated again."""
        if self._fd is None:
            raise ValueError(f"the tree store {self.path} is closed")
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            written = 0
            while written < len(line):
                written += os.write(self._fd, line[written:])
            os.fsync(self._fd)
        except OSError as err:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass  # read-only: the next open drops the torn line
            raise WriteError(
                f"cannot save a finished tree to {self.path}: {os_reason(err)}; the trees "
                f"saved before it ({len(self._trees)}) are kept there, and not generated again "
                f"when you {self.again}", err) from None
        self._size += len(line)

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        # The text after the last newline is a line a crash cut short (or "" if none was).
        complete, tail = lines[:-1], lines[-1]
        good_end = len(data) - len(tail)
        if complete:
            self._check_header(complete[0])
        elif tail:
            # Not even the header made it to disk; treat as a file holding nothing.
            self._truncate_partial(0, "a half-written header")
            return
        for number, raw in enumerate(complete[1:], start=2):
            try:
                tree = TreeResult.from_dict(json.loads(raw))
            except (ValueError, KeyError, TypeError) as err:
                if number == len(complete) and not tail:
                    # The last line ends in a newline but is still broken: a torn write whose
                    # newline landed. Same treatment as a missing newline.
                    good_end -= len(raw) + 1
                    tail = raw
                    break
                raise StoreError(
                    f"{self.path}:{number} is not a stored tree ({type(err).__name__}: {err}); "
                    "the file is damaged: use another --output directory, or drop --resume to "
                    "start over"
                ) from None
            self._trees[(tree.prompt_idx, tree.round)] = tree
        if tail:
            self._truncate_partial(good_end, "a half-written last line")

    def _check_header(self, raw: bytes) -> None:
        _check_header(self.path, raw, self.fingerprint)

    def _truncate_partial(self, good_end: int, what: str) -> None:
        warnings.warn(
            f"{self.path}: ignoring {what} (a run stopped while writing it); that tree is "
            "generated again", RuntimeWarning, stacklevel=3,
        )
        with open(self.path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())


def _current_names(fingerprint: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """A stored fingerprint with renamed settings under their new names (`settings.RENAMED`),
    and settings added since it was written (present in `current`, absent there) at their
    defaults, which is what ran then: a run started before `topk` became `entropy_k`, or
    before `min_p` existed, resumes under the same settings."""
    settings = fingerprint.get("settings")
    if not isinstance(settings, Mapping):
        return dict(fingerprint)
    settings = renamed_settings(settings, warn=False)
    now = current.get("settings") if isinstance(current.get("settings"), Mapping) else {}
    defaults = EagerConfig().to_dict()
    added = {k: defaults[k] for k in now if k not in settings and k in defaults}
    return {**fingerprint, "settings": {**settings, **added}}


def _check_header(path: Path, raw: bytes, fingerprint: Mapping[str, Any]) -> None:
    try:
        header = json.loads(raw)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StoreError(
            f"{path} is not an eager-eval tree file (its first line is no header); "
            "use another --output directory"
        )
    if header.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path} has tree-file format {header.get('format_version')!r}, this "
            f"eager-eval writes {FORMAT_VERSION}; use another --output directory, or drop "
            "--resume to start over"
        )
    stored = _current_names(header.get("fingerprint") or {}, fingerprint)
    if differing_keys(_flat(stored), _flat(fingerprint)):
        raise ResumeMismatchError(path, stored, fingerprint)



# ----------------------------------------------------------------------------------------------
# One fingerprint, two places to keep a pool's trees
# ----------------------------------------------------------------------------------------------


def prompts_sha256(prompts: Sequence[Prompt]) -> str:
    """A digest of prompts as the front end gave them (text or messages, stops, length, already
    rendered or not): with the model and the prompt settings, what their token ids are."""
    digest = hashlib.sha256()
    for p in prompts:
        content = p.content if isinstance(p.content, str) else [dict(m) for m in p.content]
        digest.update(json.dumps([content, list(p.stop), p.max_new_tokens, p.rendered],
                                 sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def pool_fingerprint(model: str, engine: "EngineOptions", prompt_settings: PromptSettings,
                     config: EagerConfig, prompts: Sequence[Prompt],
                     labels: Sequence[str | None] | None = None) -> dict[str, Any]:
    """What a pool's trees depend on: the model, the engine (backend, dtype, device type),
    the prompts, every EAGer setting that shapes a tree (theta=auto's measured value included;
    not `config.SCORING_SETTINGS`) and, in full EAGer
    (whose later rounds go to the prompts it grades wrong), the labels. Computed without the
    model, so the CLI checks a resume before it loads one. The one scheme of every store."""
    from eager_eval import __version__

    fingerprint: dict[str, Any] = {
        "model": model, "engine": engine.fingerprint(),
        "prompts": {"n": len(prompts), "sha256": prompts_sha256(prompts),
                    **prompt_settings.to_dict()},
        "settings": {k: v for k, v in config.to_dict().items() if k not in SCORING_SETTINGS},
        "eager_eval": __version__,
    }
    if labels is not None and config.mode is Mode.EAGER:
        fingerprint["labels_sha256"] = hashlib.sha256(
            json.dumps([None if label is None else str(label) for label in labels]).encode()
        ).hexdigest()
    return fingerprint


class TreeFiles(Protocol):
    """Where a front end keeps its pools' finished trees."""

    def open(self, name: str, fingerprint: Mapping[str, Any]) -> ContextManager[JsonlTreeStore]:
        """The pool `name`'s store under `fingerprint`, read back and open for appends."""
        ...


@dataclass(frozen=True)
class RunTrees:
    """The CLI's trees: `DIR/<name>.jsonl` in its run directory (held under the run's lock).

    With `resume` the file is continued, and a file of other settings is refused naming each
    difference (`check` does it before a model loads); without, an earlier run's trees are
    replaced (atomically) by a new header, with a note saying how many."""

    directory: Path
    resume: bool

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.jsonl"

    def check(self, name: str, fingerprint: Mapping[str, Any]) -> None:
        if self.resume:
            check_resumable(self.path(name), fingerprint)

    @contextlib.contextmanager
    def open(self, name: str, fingerprint: Mapping[str, Any]) -> Iterator[JsonlTreeStore]:
        path = self.path(name)
        if path.exists() and not self.resume:
            with open(path, "rb") as fh:
                n_trees = max(sum(1 for _ in fh) - 1, 0)
            if n_trees:
                print(f"note: {path} holds {n_trees} trees of an earlier run; starting over "
                      "(pass --resume to continue that run instead)", file=sys.stderr)
        store = JsonlTreeStore(path, fingerprint, start_over=not self.resume,
                               again="rerun the command with --resume")
        try:
            yield store
        finally:
            store.close()


@dataclass(frozen=True)
class TreesDir:
    """`trees=DIR` (lm-eval, Inspect): each pool's trees in `DIR/<name>-<key>.jsonl`, `<key>` a
    hash of its fingerprint, so another experiment gets another file and nothing is refused or
    mixed. The harnesses write their own outputs only when a task ends; this is what keeps a
    crashed run's trees. One process at a time uses DIR (`files.OutputLock`)."""

    directory: Path
    logger: logging.Logger = field(default=logging.getLogger("eager_eval"), compare=False)

    @classmethod
    def checked(cls, directory: str | os.PathLike[str], logger: logging.Logger | None = None,
                option: str = "trees") -> "TreesDir":
        """`trees=DIR` usable (a directory, or creatable): checked before a model loads."""
        check_output_dir(directory, option)
        return cls(Path(directory), logger or logging.getLogger("eager_eval"))

    def path(self, name: str, fingerprint: Mapping[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode())
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "pool"
        return self.directory / f"{slug}-{key.hexdigest()[:16]}.jsonl"

    @contextlib.contextmanager
    def open(self, name: str, fingerprint: Mapping[str, Any]) -> Iterator[JsonlTreeStore]:
        with OutputLock(self.directory):
            store = JsonlTreeStore(self.path(name, fingerprint), fingerprint)
            if store.resumed:
                self.logger.info("eager-eval: %s: %d finished trees read back from %s; "
                                 "generating the rest", name, store.resumed, store.path)
            try:
                yield store
            finally:
                store.close()
