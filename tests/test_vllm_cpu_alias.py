"""`python .ci/vllm_cpu_alias.py`, the CI's metadata alias for the vllm-cpu build (no vllm
needed here)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "vllm_cpu_alias.py"
_spec = importlib.util.spec_from_file_location("vllm_cpu_alias", _SCRIPT)
vllm_cpu_alias = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vllm_cpu_alias)


def fake_site(tmp_path, monkeypatch, *dists: tuple[str, str]):
    """A folder on sys.path holding metadata-only distributions (importlib finds them there)."""
    for name, version in dists:
        folder = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
        folder.mkdir()
        (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="a real vllm is installed")
def test_alias_makes_vllm_cpu_answer_to_the_vllm_name(tmp_path, monkeypatch):
    site = fake_site(tmp_path, monkeypatch, ("vllm-cpu", "0.32.0"))
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("vllm")
    folder = vllm_cpu_alias.write_alias()
    assert folder == site / "vllm-0.32.0+cpu.dist-info"
    assert importlib.metadata.version("vllm") == "0.32.0+cpu"  # '+cpu': vLLM's platform check
    assert vllm_cpu_alias.write_alias() == folder  # twice is fine
    record = (folder / "RECORD").read_text().split()
    assert sorted(record) == sorted(f"{folder.name}/{n},," for n in ("METADATA", "INSTALLER", "RECORD"))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="a real vllm is installed")
def test_alias_without_vllm_cpu_says_what_to_install(capsys):
    assert vllm_cpu_alias.main([]) == 1
    assert "vllm-cpu is not installed" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="a real vllm is installed")
def test_alias_refuses_a_second_vllm(tmp_path, monkeypatch):
    fake_site(tmp_path, monkeypatch, ("vllm-cpu", "0.32.0"), ("vllm", "0.33.0"))
    with pytest.raises(vllm_cpu_alias.AliasError, match="already installed"):
        vllm_cpu_alias.write_alias()


def test_the_alias_is_ci_tooling_not_part_of_the_package():
    assert importlib.util.find_spec("eager_eval.vllm_cpu_alias") is None
