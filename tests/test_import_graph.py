"""The import graph of the mrt package has no circle, mrt.errors is a leaf, and training does not load evaluation's
plotting.

Every module under mrt/ is parsed (ast, nothing is imported), and every import statement in it counts, function-local
ones included: a circle hidden inside a function still runs when the function does, and still means two modules that
cannot be read, tested or moved one without the other. An edge A -> B is an import in A of the mrt module B
(`from .x import name` is an edge to x, or to x.name where that is a module), plus A -> P when A imports a module of
the package P from outside P: importing `mrt.eval.metrics` runs `mrt/eval/__init__.py` first.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "mrt"


def _modules(root: str = ROOT, package: str = PACKAGE) -> dict[str, tuple[str, bool]]:
    """{dotted name: (file, is a package's __init__)} for every .py file under root/package."""
    found = {}
    for folder, dirs, files in os.walk(os.path.join(root, package)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            parts = os.path.relpath(os.path.join(folder, f), root)[:-3].split(os.sep)
            is_init = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_init else parts)] = (os.path.join(folder, f), is_init)
    return found


def _resolve(module: str | None, level: int, importer: str, is_init: bool) -> str:
    """The absolute name a `from <level dots><module> import ...` in importer refers to."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_init else importer.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(tree: ast.AST, importer: str, is_init: bool, in_function: bool = False
               ) -> list[tuple[str, list[str], bool]]:
    """(absolute module name, names imported from it, inside a function) of every import statement in tree, at any
    depth (a function's imports run when it is called, the others when the module is imported)."""
    out = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], in_function) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            out.append((_resolve(node.module, node.level, importer, is_init), names, in_function))
        else:
            deferred = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            out += imports_of(node, importer, is_init, deferred)
    return out


def _known(name: str, modules) -> str | None:
    """The longest prefix of name that is a module of the package (None: not the package's)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, tuple[str, bool]], eager: bool = False
                 ) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """({module: the package's modules it imports}, {module: the top-level names of the other packages it imports});
    eager: only the imports that run when the module is imported (none inside a function)."""
    graph, external = {}, {}
    for name, (path, is_init) in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        deps, ext = set(), set()
        for target, names, in_function in imports_of(tree, name, is_init):
            if eager and in_function:
                continue
            if target.split(".")[0] != PACKAGE:
                ext.add(target.split(".")[0])
                continue
            hits = {t for t in (f"{target}.{n}" for n in names) if t in modules} or {_known(target, modules)}
            for hit in hits - {None}:
                deps.add(hit)
                # Importing pkg.sub from outside pkg runs pkg/__init__.py (and its parents', up to the importer's).
                parent = hit.rpartition(".")[0]
                while parent and not (name == parent or name.startswith(parent + ".")):
                    deps.add(parent)
                    parent = parent.rpartition(".")[0]
        deps.discard(name)
        graph[name], external[name] = deps, ext
    return graph, external


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as [a, b, ..., a], or None (iterative depth-first search, sorted for a stable report)."""
    state = {}                                   # absent: unseen; 1: on the current path; 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


@pytest.fixture(scope="module")
def graph():
    return import_graph(_modules())


def test_the_graph_is_read(graph):
    """The parser sees imports (a graph without edges would pass every check below)."""
    deps, external = graph
    assert len(deps) > 50 and "mrt.trainer" in deps and "mrt.errors" in deps
    assert {"mrt.config", "mrt.rollout"} <= deps["mrt.trainer"] and "torch" in external["mrt.trainer"]
    assert "mrt.hub" in deps["mrt.check"]            # a function-local import counts


def test_no_circle_of_imports(graph):
    cycle = find_cycle(graph[0])
    assert cycle is None, "a circle of imports in mrt/: " + " -> ".join(cycle)


def test_errors_is_a_leaf(graph):
    deps, external = graph
    assert deps["mrt.errors"] == set(), f"mrt/errors.py imports {sorted(deps['mrt.errors'])}"
    assert external["mrt.errors"] <= {"__future__"}, external["mrt.errors"]


@pytest.mark.parametrize("start", ["mrt.trainer", "mrt.eval"])
def test_matplotlib_only_when_a_plot_is_drawn(graph, start):
    """Whatever training or evaluation imports, at any time, imports matplotlib only inside the function that draws
    (mrt.metrics_log's curves, mrt.eval.plots): a module that imports it at its top would load it for every import
    of mrt.eval (its __init__ names the plots) and every run that reaches one of its modules."""
    deps, _ = graph
    _, eager_external = import_graph(_modules(), eager=True)
    at_import = sorted(m for m in closure(deps, start) if "matplotlib" in eager_external[m])
    assert not at_import, f"{start} reaches modules that import matplotlib when imported: {at_import}"


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_parent_package_and_relative_imports(tmp_path):
    """`from .sub import x` resolves relative to the importer; importing a package's module from outside the
    package also imports the package (its __init__ runs)."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from ..top import g\n")
    (pkg / "top.py").write_text("import os\nfrom .sub.leaf import f\n")
    deps, external = import_graph(_modules(str(tmp_path)))
    assert import_graph(_modules(str(tmp_path)), eager=True)[0][f"{PACKAGE}.sub.leaf"] == set()
    assert deps[f"{PACKAGE}.top"] == {f"{PACKAGE}.sub.leaf", f"{PACKAGE}.sub"} and external[f"{PACKAGE}.top"] == {"os"}
    assert deps[f"{PACKAGE}.sub"] == {f"{PACKAGE}.sub.leaf"}
    assert deps[f"{PACKAGE}.sub.leaf"] == {f"{PACKAGE}.top"}
    assert find_cycle(deps) == [f"{PACKAGE}.sub", f"{PACKAGE}.sub.leaf", f"{PACKAGE}.top", f"{PACKAGE}.sub"]
