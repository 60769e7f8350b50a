"""eager-eval's start-up hook: plain `lm_eval --model eager-hf` finds eager-eval's models.

lm-eval 0.4.13 has no model plugins (HARNESS.md): a model is found only if something registered
it in `lm_eval.api.registry.model_registry` before the CLI looks it up. The wheel ships
`eager_eval_lm_eval.pth` at the site-packages root, whose one line imports this module at every
Python start-up. So this module is a top-level one, outside the `eager_eval` package (whose
import costs ~20 ms), and only puts a tiny finder first on `sys.meta_path`. The finder answers
for exactly one module, `lm_eval.api.registry`: then `eager_eval.frontends.lm_eval.autoreg` finds the real
module with the other finders and wraps its loader so that, right after the registry module has
run, our two names are added as lazy "module:Class" strings (after lm-eval's own models).
Nothing heavy is imported: `python -c pass` imports neither lm_eval nor eager_eval.

Every failure is a warning, never an exception: lm-eval must work without us. Environments that
skip `.pth` files (or set EAGER_EVAL_NO_LM_EVAL_HOOK=1) use the `eager-lm-eval` console script.
docs/LM_EVAL.md has the measured start-up cost and the packaging (hatch force-include).
"""

import os
import sys

# No other import: this module runs at every Python start-up (typing alone costs ~10 ms).

REGISTRY_MODULE = "lm_eval.api.registry"
HOOK_MARKER = "eager_eval_hook"
"""Attribute of the finder: `install` adds one only, `registry_spec` skips it when it searches."""
DISABLE_ENV = "EAGER_EVAL_NO_LM_EVAL_HOOK"
"""Set (non-empty) to install no hook: lm_eval then knows only its own models."""


class LmEvalRegistryHook:
    """A meta-path finder that answers only for lm-eval's model registry."""

    eager_eval_hook = True

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> object:
        if name != REGISTRY_MODULE:
            return None
        try:
            from eager_eval.frontends.lm_eval.autoreg import registry_spec
        except Exception as err:  # a broken install must not break lm-eval
            import warnings

            warnings.warn(f"eager-eval: cannot register eager-hf/eager-vllm with lm-eval: {err!r}",
                          RuntimeWarning, stacklevel=2)
            return None
        return registry_spec(name, path, target)


def install() -> None:
    """Put the finder first on sys.meta_path, once (two installs run the .pth line twice)."""
    if os.environ.get(DISABLE_ENV):
        return
    if not any(getattr(finder, HOOK_MARKER, False) for finder in sys.meta_path):
        sys.meta_path.insert(0, LmEvalRegistryHook())


install()
