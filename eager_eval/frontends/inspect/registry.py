"""Registers the `eager` model provider with Inspect AI (entry point group `inspect_ai`).

Inspect imports this module for every eval (pyproject: `[project.entry-points.inspect_ai]`), so
it stays tiny: registering is apart from importing. The provider class, and through it torch,
loads only when `--model eager/<name>` is used (as Inspect's own `_providers/providers.py` does).
"""

from __future__ import annotations

from inspect_ai.model import ModelAPI, modelapi


@modelapi(name="eager")
def eager() -> type[ModelAPI]:
    try:
        from eager_eval.frontends.inspect.provider import EagerModelAPI  # torch loads with the model
    except ImportError as err:
        raise ImportError(
            f"the eager provider needs eager-eval's dependencies ({err}); install them with: "
            "pip install 'eager-eval[inspect]'"
        ) from err
    return EagerModelAPI
