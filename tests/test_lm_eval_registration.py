"""`lm_eval --model eager-hf` on a stock lm-eval: the .pth start-up hook and the entry points.

The hook must register our models only when lm-eval loads its registry, after lm-eval's own
models, and cost (almost) nothing in every other Python process.
"""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("lm_eval")

from eager_eval import _lm_eval_autoreg as autoreg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PTH = REPO / "eager_eval_lm_eval.pth"


def installed_pth() -> Path | None:
    for directory in [*site.getsitepackages(), site.getusersitepackages()]:
        path = Path(directory) / PTH.name
        if path.is_file():
            return path
    return None


def python(code: str, *flags: str) -> str:
    done = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_pth_is_one_import_line():
    lines = PTH.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("import ")  # site.py execs only such lines
    assert autoreg.REGISTRY_MODULE in lines[0] and autoreg.HOOK_MARKER in lines[0]


def test_pth_line_registers_models_after_lm_eval_s_own():
    """In an interpreter without site (no installed .pth), run the repo's line by hand."""
    code = f"""
import sys
sys.path[:0] = [{str(REPO)!r}, {sysconfig.get_paths()["purelib"]!r}]
exec(open({str(PTH)!r}).read())
exec(open({str(PTH)!r}).read())  # twice (two installs): still one hook
hooks = [f for f in sys.meta_path if getattr(f, "eager_eval_hook", False)]
assert len(hooks) == 1, sys.meta_path
assert "eager_eval" not in sys.modules  # the line imports nothing
from lm_eval.api.registry import model_registry
for name in ("hf", "vllm", "dummy", "eager-hf", "eager-vllm"):
    assert name in model_registry, name
assert "torch" not in sys.modules  # registered lazily: torch loads with the model only
print(len(model_registry))
"""
    assert int(python(code, "-S")) > 30


def test_register_models_adds_lazy_targets_and_never_raises():
    class FakeRegistry(dict):
        def register(self, alias, target):
            self[alias] = target

    registry = SimpleNamespace(model_registry=FakeRegistry({"eager-hf": "already there"}))
    autoreg.register_models(registry)
    assert registry.model_registry == {
        "eager-hf": "already there",  # e.g. a newer lm-eval's own entry-point registration
        "eager-vllm": "eager_eval.integrations.lm_eval:EagerVLLM"}
    with pytest.warns(RuntimeWarning, match="could not register eager-hf, eager-vllm"):
        autoreg.register_models(object())


def test_registry_spec_wraps_the_real_loader():
    import lm_eval.api

    spec = autoreg.registry_spec(autoreg.REGISTRY_MODULE, lm_eval.api.__path__)
    assert isinstance(spec.loader, autoreg._RegisteringLoader)
    assert spec.origin.endswith("registry.py")
    assert autoreg.registry_spec("no_such_module_here", None) is None


def test_pth_line_is_cheap():
    line = PTH.read_text()
    before = list(sys.meta_path)
    try:
        started = time.perf_counter()
        for _ in range(20):
            sys.meta_path[:] = before
            exec(line, {})
        per_line = (time.perf_counter() - started) / 20
    finally:
        sys.meta_path[:] = before
    assert per_line < 0.02  # measured ~0.4 ms (docs/LM_EVAL.md); 20 ms is the budget


def test_packaging_ships_the_pth_and_the_entry_points():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"][PTH.name] == PTH.name  # at the wheel root = site-packages
    assert project["project"]["entry-points"]["lm_eval.models"] == autoreg.MODELS


@pytest.mark.skipif(installed_pth() is None, reason="eager-eval is not installed in this env")
def test_installed_environment_starts_clean_and_finds_the_models():
    assert installed_pth().read_text() == PTH.read_text(), "reinstall: pip install -e ."
    out = python("import sys; print('lm_eval' in sys.modules, 'eager_eval' in sys.modules)")
    assert out == "False False"  # `python -c pass` imports neither
    out = python("from lm_eval.api.registry import model_registry as r; "
                 "print('hf' in r, 'vllm' in r, 'eager-hf' in r, 'eager-vllm' in r)")
    assert out == "True True True True"
