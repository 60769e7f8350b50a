"""Which device an lm-eval user asked for: lm-eval passes 'cuda:0' when they asked for none.

lm-eval 0.4.13's CLI hands every model `device='cuda:0'` when `--device` is absent (its
EvaluatorConfig default), even on a machine without a GPU, so the value alone cannot tell a
request from the default; the command line can. A request is honoured (and refused by name
where the device is not there); the default becomes eager-eval's own default, `auto`. This
reads `sys.argv`, lm-eval's detail kept here alone (tests/test_lm_eval_models.py checks the
default is still what lm-eval passes).
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

LM_EVAL_DEFAULT_DEVICE = "cuda:0"
"""What lm-eval 0.4.13's CLI passes as `device` when --device is absent (EvaluatorConfig)."""


def device_on_command_line(argv: Sequence[str] | None = None) -> bool:
    """Whether the lm_eval command line names a device (`--device X` or `--device=X`)."""
    args = sys.argv[1:] if argv is None else argv
    return any(a == "--device" or a.startswith("--device=") for a in args)


def without_default_device(extra: Mapping[str, Any], argv: Sequence[str] | None = None) -> dict[str, Any]:
    """lm-eval's extra model arguments, its default device dropped (not a request)."""
    extra = {k: v for k, v in extra.items() if v is not None}
    if extra.get("device") == LM_EVAL_DEFAULT_DEVICE and not device_on_command_line(argv):
        del extra["device"]
    return extra


__all__ = ["LM_EVAL_DEFAULT_DEVICE", "device_on_command_line", "without_default_device"]
