"""Registers `eager-hf` and `eager-vllm` with lm-eval 0.4.13 when lm-eval loads its registry.

The start-up hook (`eager_eval_lm_eval_hook`, imported by the one-line `eager_eval_lm_eval.pth`)
calls `registry_spec` when `lm_eval.api.registry` is imported; it finds the real module with the
other finders and wraps its loader so that, right after the registry module has run,
`register_models` imports `lm_eval.models` (which registers `hf`, `vllm`, ... lazily;
registering first would hide them, as `get_model` imports `lm_eval.models` only into an empty
registry) and adds our two names as lazy "module:Class" strings. `eager-lm-eval`
(`frontends/lm_eval/cli.py`) calls `register_models` itself, for environments without the
hook. Nothing heavy is imported: torch loads only when `--model eager-hf` is instantiated.

Every failure here is reported as a warning and swallowed: lm-eval must work without us.
"""

from __future__ import annotations

import sys
from typing import Any

REGISTRY_MODULE = "lm_eval.api.registry"
MODELS = {
    "eager-hf": "eager_eval.frontends.lm_eval.models:EagerHFLM",
    "eager-vllm": "eager_eval.frontends.lm_eval.models:EagerVLLM",
}
"""Same targets as the `lm_eval.models` entry points in pyproject.toml."""

HOOK_MARKER = "eager_eval_hook"
"""Attribute set on the start-up hook's finder, so `registry_spec` can skip it when it searches
(the same name as `eager_eval_lm_eval_hook.HOOK_MARKER`)."""


def register_models(registry: Any) -> None:
    """Add MODELS to `registry.model_registry` after lm-eval's own models; never raises."""
    try:
        import lm_eval.models  # noqa: F401  (fills the registry with hf, vllm, ...)

        for alias, target in MODELS.items():
            if alias not in registry.model_registry:  # a newer lm-eval may load entry points
                registry.model_registry.register(alias, target=target)
    except Exception as err:  # lm-eval must keep working without eager-eval
        _warn(f"could not register {', '.join(MODELS)} with lm-eval: {err!r}")


class _RegisteringLoader:
    """The real loader of lm_eval.api.registry, plus `register_models` after it has run."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        register_models(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_code, is_package, ...
        return getattr(self._loader, name)


def registry_spec(name: str, path: Any = None, target: Any = None) -> Any:
    """The real spec of `name` (lm_eval.api.registry) with a registering loader; None if no
    other finder knows it (lm-eval not installed), so the import fails as it would anyway."""
    for finder in list(sys.meta_path):
        if getattr(finder, HOOK_MARKER, False) or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(name, path, target)
        if spec is not None:
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _RegisteringLoader(spec.loader)
            return spec
    return None


def _warn(message: str) -> None:
    import warnings

    warnings.warn(f"eager-eval: {message}", RuntimeWarning, stacklevel=2)
