"""Finished trees of lm-eval and Inspect runs kept on disk (`trees=DIR`): a crash loses none.

The CLI keeps its trees in its `--output` directory and continues with `--resume`. lm-eval and
Inspect own their outputs and write them when a task ends, so a run of hours that crashes or is
stopped would lose every tree it grew. With `trees=DIR` every finished tree of a pool goes to
`DIR/<name>-<key>.jsonl` the moment it ends (`store.JsonlTreeStore`, fsynced); the same command
run again reads them back and generates only what is missing, with the same trees and numbers
as an uninterrupted run (seeds are per prompt and tree, never per process).

`<key>` is a hash of the pool's fingerprint: the model, the engine, every EAGer setting (the
calibrated theta included), the prompts' token ids, stops and lengths, and in full EAGer the
labels it grades with. Another experiment
gets another file, so nothing is refused and nothing mixes. One process at a time uses DIR
(`files.OutputLock`: a second stops at once, naming the first's pid).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from eager_eval.core.config import EagerConfig, Mode
from eager_eval.common.files import OutputLock, check_output_dir
from eager_eval.pipeline.store import JsonlTreeStore
from eager_eval.core.tree import PromptInput

log = logging.getLogger("eager_eval")


def check_trees_dir(directory: str | Path, option: str = "trees") -> Path:
    """`trees=DIR` usable (a directory, or creatable): checked before a model loads."""
    check_output_dir(directory, option)
    return Path(directory)


def pool_fingerprint(model: str, engine: Mapping[str, Any], config: EagerConfig,
                     prompts: Sequence[PromptInput],
                     labels: Sequence[Any] | None = None) -> dict[str, Any]:
    """What a pool's trees depend on. `labels`: full EAGer's gold answers (its later rounds
    go to the prompts they grade wrong); other modes never read them."""
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(json.dumps([list(p.tokens), list(p.stop), p.max_new_tokens,
                                  p.opens_thinking]).encode())
        digest.update(b"\n")
    fingerprint = {"model": model, "engine": dict(engine), "settings": config.to_dict(),
                   "n_prompts": len(prompts), "prompts_sha256": digest.hexdigest()}
    if labels is not None and config.mode is Mode.EAGER:
        fingerprint["labels_sha256"] = hashlib.sha256(
            json.dumps([str(label) for label in labels]).encode()).hexdigest()
    return fingerprint


@contextlib.contextmanager
def cached_trees(directory: str | Path, name: str, fingerprint: Mapping[str, Any],
                 logger: logging.Logger = log) -> Iterator[JsonlTreeStore]:
    """The tree file of one pool, opened (and read back) under DIR's lock; `logger` says how
    many trees came back (the harness's own logger, so its CLI prints the line)."""
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "pool"
    with OutputLock(directory):
        store = JsonlTreeStore(Path(directory) / f"{slug}-{key.hexdigest()[:16]}.jsonl",
                               fingerprint)
        if store.resumed:
            logger.info("eager-eval: %s: %d finished trees read back from %s; generating the rest",
                     name, store.resumed, store.path)
        try:
            yield store
        finally:
            store.close()
