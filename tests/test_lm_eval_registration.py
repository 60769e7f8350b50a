"""`lm_eval --model eager-hf` on a stock lm-eval: the .pth start-up hook, the entry points, and
`eager-lm-eval` for environments without the hook.

The hook must register our models only when lm-eval loads its registry, after lm-eval's own
models, and cost (almost) nothing in every other Python process.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("lm_eval")

import eager_eval_lm_eval_hook as hook  # noqa: E402
from eager_eval.frontends.lm_eval import autoreg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PTH = REPO / "eager_eval_lm_eval.pth"
HOOK = REPO / "eager_eval_lm_eval_hook.py"


def installed_pth() -> Path | None:
    for directory in [*site.getsitepackages(), site.getusersitepackages()]:
        path = Path(directory) / PTH.name
        if path.is_file():
            return path
    return None


def python(code: str, *flags: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_pth_is_one_import_line_of_a_real_module():
    assert PTH.read_text().splitlines() == [f"import {hook.__name__}"]  # site.py execs it
    assert hook.REGISTRY_MODULE == autoreg.REGISTRY_MODULE
    assert hook.HOOK_MARKER == autoreg.HOOK_MARKER
    assert hook.__file__ and Path(hook.__file__).name == HOOK.name


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
        "eager-vllm": "eager_eval.frontends.lm_eval.models:EagerVLLM"}
    with pytest.warns(RuntimeWarning, match="could not register eager-hf, eager-vllm"):
        autoreg.register_models(object())


def test_registry_spec_wraps_the_real_loader():
    import lm_eval.api

    spec = autoreg.registry_spec(autoreg.REGISTRY_MODULE, lm_eval.api.__path__)
    assert isinstance(spec.loader, autoreg._RegisteringLoader)
    assert spec.origin.endswith("registry.py")
    assert autoreg.registry_spec("no_such_module_here", None) is None


def test_hook_module_is_cheap_and_imports_nothing():
    """Run the hook module's code in a fresh -S interpreter: what it imports and its cost."""
    code = f"""
import os, sys, time  # os: what site.py has imported before it reads .pth files
before = set(sys.modules)
started = time.perf_counter()
exec(compile(open({str(HOOK)!r}).read(), {str(HOOK)!r}, "exec"), {{"__name__": "hook"}})
spent = time.perf_counter() - started
print(sorted(set(sys.modules) - before), spent)
"""
    new_modules, spent = python(code, "-S").rsplit(" ", 1)
    # what keeps it cheap at every start-up: it imports nothing (no typing, no eager_eval, no
    # lm_eval); its cost (~0.2 ms, docs/LM_EVAL.md) is measured there, not asserted here
    assert new_modules == "[]"
    assert float(spent) >= 0


def test_no_hook_when_switched_off_and_eager_lm_eval_registers_itself():
    """EAGER_EVAL_NO_LM_EVAL_HOOK stands for an environment that skips .pth files: lm_eval's
    registry then lacks our models, and `eager-lm-eval` (its own command line) adds them."""
    code = """
import sys
import lm_eval.api.registry as r
print('eager-hf' in r.model_registry)
sys.argv = ['eager-lm-eval', '--help']
from eager_eval.frontends.lm_eval.cli import main
try:
    main()
except SystemExit:
    pass
print('hf' in r.model_registry, 'eager-hf' in r.model_registry, 'eager-vllm' in r.model_registry)
"""
    out = python(code, env={hook.DISABLE_ENV: "1"}).splitlines()
    assert out[0] == "False" and out[-1] == "True True True"


def test_packaging_ships_the_pth_and_the_entry_points():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"][PTH.name] == PTH.name  # at the wheel root = site-packages
    assert wheel["force-include"][HOOK.name] == HOOK.name  # the module the line imports
    assert project["project"]["entry-points"]["lm_eval.models"] == autoreg.MODELS
    assert project["project"]["scripts"]["eager-lm-eval"] == \
        "eager_eval.frontends.lm_eval.cli:main"


@pytest.mark.skipif(installed_pth() is None, reason="eager-eval is not installed in this env")
def test_installed_environment_starts_clean_and_finds_the_models():
    assert installed_pth().read_text() == PTH.read_text(), "reinstall: pip install -e ."
    installed_hook = installed_pth().parent / HOOK.name  # a copy, even in editable installs
    assert installed_hook.read_text() == HOOK.read_text(), "reinstall: pip install -e ."
    out = python("import sys; print('lm_eval' in sys.modules, 'eager_eval' in sys.modules)")
    assert out == "False False"  # `python -c pass` imports neither
    out = python("from lm_eval.api.registry import model_registry as r; "
                 "print('hf' in r, 'vllm' in r, 'eager-hf' in r, 'eager-vllm' in r)")
    assert out == "True True True True"
