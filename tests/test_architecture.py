"""Structure of the package: the import graph of ``arcloss`` has no cycle (every import statement counts, also
those inside functions), and the layers import only downwards."""

from __future__ import annotations

import ast
from pathlib import Path

import arcloss

ROOT = Path(arcloss.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ["arcloss", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> set[str]:
    """The ``arcloss`` modules that ``path`` imports (relative imports resolved; a package's ``__init__`` is
    imported before its submodules, so ``from .pkg import x`` depends on ``pkg`` and on ``pkg.x`` if it exists)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("arcloss"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("arcloss"):
                continue
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = {t for t in _imports(path, name) if t in modules and t != name}
        # importing a.b.c first imports the packages a.b (their __init__)
        graph[name] = {package for t in targets for package in _packages(t) if package in modules} | targets
        # a module's own enclosing packages are already being imported when it runs: not a dependency
        graph[name] -= {name, *_packages(name)}
    return graph


def _packages(module: str) -> list[str]:
    """The packages enclosing ``module`` (importing it imports them first)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state and not node.endswith("__init__"):
            visit(node)
    assert len(graph) > 15


def test_the_engine_layer_knows_nothing_above_it():
    """``arcloss.ops`` imports no module of the layers above it (margins, modules, functional, distributed)."""
    graph = _graph()
    above = ("arcloss.losses", "arcloss.functional", "arcloss.margins", "arcloss.distributed", "arcloss._autograd")
    for name, targets in graph.items():
        if name.startswith("arcloss.ops"):
            assert not [t for t in targets if t.startswith(above)], (name, targets)
