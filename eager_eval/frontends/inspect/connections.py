"""Let every sample of a task call generate() at once: the pool must span the whole task.

Inspect (0.3.285) runs at most max_samples samples and max_connections calls at a time, and by
default adapts both between 10 and 100 (adaptive connections): a task of 198 samples would
reach the pool in pieces. An explicit max_connections turns adaptation off and sets both
limits (max_samples defaults to it). Inspect hands the model's GenerateConfig to the provider
before it reads these limits from it (`Model.config` is this very object), so setting it here
is what `--max-connections` would do. That is Inspect's detail, not its contract: it is kept
here alone, and tests/test_inspect_pool.py fails when a task of 70 samples no longer pools in
one run.

Also here, for the same reason: the api_key Inspect passes when it builds a provider only to
look up model info (a private name; its value in inspect_ai 0.3.285 as the fallback).
"""

from __future__ import annotations

from inspect_ai.model import GenerateConfig

try:  # the api_key Inspect passes when it builds a provider only to look up model info
    from inspect_ai.model._model_info import MODEL_INFO_LOOKUP_API_KEY
except ImportError:  # pragma: no cover (a private name; its value in inspect_ai 0.3.285)
    MODEL_INFO_LOOKUP_API_KEY = "__model_info_lookup__"

ADMIT_ALL = 10_000
"""The connection limit the provider asks Inspect for when the user set none: every sample x
epoch of a task may call at once (Inspect's own ceiling for batch APIs,
DEFAULT_MAX_CONNECTIONS_BATCH). A local engine has no rate limit to respect; what bounds its
memory is -M max_rows (live sequences) and -M batch_size (calls per pool)."""


def admit_every_call(config: GenerateConfig) -> None:
    """Let every sample of a task call generate() at once, unless the user set
    --max-connections (see the module docstring)."""
    if config.max_connections is None:
        config.max_connections = ADMIT_ALL


__all__ = ["ADMIT_ALL", "MODEL_INFO_LOOKUP_API_KEY", "admit_every_call"]
