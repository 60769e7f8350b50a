"""The package's layers, decided by path: a module may import its own layer and the ones below,
never one above, and imports form no loop (lazy ones inside functions too).

    common  <  core  <  engines  <  pipeline  <  report  <  frontends

(`eager_eval/__init__.py` is the package's face: it may re-export from the core.) Every import
statement counts, inside functions and `TYPE_CHECKING` blocks too: a lazy import that runs back
up is still a dependency on a higher layer. docs/ARCHITECTURE.md draws the same picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "eager_eval"
LAYERS = ["common", "core", "engines", "pipeline", "report", "frontends"]
"""Bottom to top: the folder under eager_eval/ names a module's layer."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "eager_eval" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def imports(path: Path) -> list[tuple[str, int]]:
    """(module imported, line) for every eager_eval import in `path` (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            # `from eager_eval.engines import registry` imports the submodule
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
            found.append((base, node.lineno))
    return [(m, line) for m, line in found if m.startswith("eager_eval")]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_lives_in_a_layer():
    loose = [module_name(p) for p in MODULES
             if layer_of(module_name(p)) is None and module_name(p) != "eager_eval"]
    assert loose == [], "put these modules in one of the layer folders: " + ", ".join(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_a_higher_layer(path):
    own = layer_of(module_name(path))
    if own is None:  # the package's face: eager_eval/__init__.py
        bad = [(m, line) for m, line in imports(path) if layer_of(m) not in (None, 0, 1)]
    else:
        bad = [(m, line) for m, line in imports(path)
               if layer_of(m) is not None and layer_of(m) > own]
    assert bad == [], (f"{module_name(path)} ({LAYERS[own] if own is not None else 'package'}) "
                       f"imports a higher layer: "
                       + ", ".join(f"{m} (line {line}, {LAYERS[layer_of(m)]})" for m, line in bad))


def test_imports_form_no_loop():
    """Function-level imports count: a lazy import that closes a loop still ties two modules
    into one (registry <-> replicas and main <-> sweep_grid did, until options.py)."""
    known = {module_name(p) for p in MODULES}
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        targets = set()
        for module, _ in imports(path):
            while module and module not in known:  # `from pkg import name`: the package
                module = module.rpartition(".")[0]
            if module and module != module_name(path):
                targets.add(module)
        graph[module_name(path)] = targets
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                loop = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import loop: " + " -> ".join(loop))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_violation(tmp_path):
    """The rule can fail: a core module importing a front end is found, line and all."""
    fake = PACKAGE / "core" / "_layer_probe.py"
    assert not fake.exists()
    try:
        fake.write_text("def f():\n    from eager_eval.frontends.cli import main\n")
        assert imports(fake) and layer_of(imports(fake)[0][0]) == LAYERS.index("frontends")
        with pytest.raises(AssertionError, match="imports a higher layer"):
            test_no_module_imports_a_higher_layer(fake)
    finally:
        fake.unlink()
