"""The package's shape: no import cycles among fmtransfer's modules, counting imports inside
functions, and a function-local import only where it loads a heavy library late.

Read from the source with `ast`, so nothing is imported to check it and the answer does not
depend on what an earlier test happened to import.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fmtransfer"
# What `--help` and usage errors must not wait for: a function-local import exists to load these late.
HEAVY = {"tensorflow", "keras", "matplotlib", "scipy", "sklearn", "numpy"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(node: ast.ImportFrom | ast.Import, here: str) -> list[str]:
    """The fmtransfer modules an import statement loads (a `from pkg import name` names a
    module when `pkg.name` is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    base = node.module or ""
    if node.level:  # relative: from the package of `here`
        package = here if MODULES[here].name == "__init__.py" else here.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}".strip(".")
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    if base in MODULES and len(found) < len(node.names):
        found.append(base)
    return found


def imports(name: str) -> list[tuple[str, bool, ast.AST]]:
    """(module imported, whether inside a function, the statement) for each import in `name`."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((m, local, child) for m in _resolve(child, name))
            visit(child, inner)

    visit(tree, False)
    return [(m, local, node) for m, local, node in found if m != name]


def _top_level_third_party(name: str) -> set[str]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    roots = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            roots |= {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            roots.add(node.module.partition(".")[0])
    return roots


def heavy_modules() -> set[str]:
    """fmtransfer's modules that load a heavy library when imported, directly or through another."""
    heavy = {m for m in MODULES if _top_level_third_party(m) & HEAVY}
    changed = True
    while changed:
        changed = False
        for m in MODULES:
            if m not in heavy and any(dep in heavy for dep, local, _ in imports(m) if not local):
                heavy.add(m)
                changed = True
    return heavy


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_the_cycle_finder_finds_a_cycle_and_nothing_else():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"b"}}) == []


def test_the_walk_sees_imports_inside_functions():
    found = {(m, local) for name in MODULES for m, local, _ in imports(name)}
    assert any(local for _, local in found), "no function-local import seen at all: the walk is broken"
    assert "fmtransfer.config" in {m for m, _ in found}


def test_no_import_cycles_among_fmtransfers_modules_counting_imports_inside_functions():
    edges = {name: {m for m, _, _ in imports(name)} for name in MODULES}
    # A package's __init__ is run by importing any of its modules, so `pkg.__init__ -> pkg.mod`
    # re-exports are no cycle unless `pkg.mod` imports something that imports the package back.
    assert cycles(edges) == []


def test_function_local_imports_only_load_heavy_libraries_late():
    heavy = heavy_modules()
    assert "fmtransfer.training" in heavy  # the walk's own check: training imports TensorFlow
    offenders = [f"{MODULES[name].relative_to(PACKAGE.parent)}:{node.lineno} imports {m}"
                 for name in MODULES for m, local, node in imports(name) if local and m not in heavy]
    assert offenders == []
