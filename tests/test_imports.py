"""The import graph of the package: layers import downwards only, through facades, without cycles.

Layers, lowest first: kernel.machine, kernel.net, kernel.cobj, the kernel
facade, objects, tornado_dsm.  Every import statement of every module counts,
function-level ones included (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = {"tornado_dsm.kernel": ROOT / "kernel", "tornado_dsm.objects": ROOT / "objects",
           "tornado_dsm": ROOT / "tornado_dsm"}
RANKS = ("tornado_dsm.kernel.machine", "tornado_dsm.kernel.net", "tornado_dsm.kernel.cobj",
         "tornado_dsm.kernel", "tornado_dsm.objects", "tornado_dsm")


def module_files() -> dict[str, pathlib.Path]:
    """Every module of the package by dotted name (packages by their own name)."""
    out = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            if path.name == "_build.py":
                continue   # run by setuptools at build time, never imported
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([prefix, *parts])] = path
    return out


MODULES = module_files()


def layer(module: str) -> str:
    """The layer a module belongs to: the longest layer name it starts with."""
    return max((r for r in RANKS if module == r or module.startswith(r + ".")), key=len)


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def imports_of(module: str) -> set[str]:
    """The package modules ``module`` imports (a name imported from a package
    counts as its submodule when one exists by that name)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if is_package(module) else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != module}
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def facade(module: str, target: str) -> str:
    """The one module through which ``module`` may import ``target``'s layer: the
    kernel facade from outside the kernel, else the target layer's package."""
    kernel = "tornado_dsm.kernel"
    if target.startswith(kernel + ".") and not (module == kernel or module.startswith(kernel + ".")):
        return kernel
    return layer(target)


def violations(module: str, targets) -> list[str]:
    """What is wrong with ``module`` importing ``targets``: an upward import, or
    a lower layer reached other than through its facade."""
    out = []
    for target in sorted(targets):
        if RANKS.index(layer(target)) > RANKS.index(layer(module)):
            out.append(f"{module} imports {target}, a layer above it")
        elif layer(target) != layer(module) and target != facade(module, target):
            out.append(f"{module} imports {target}: use the facade {facade(module, target)}")
    return out


class TestLayers:
    @pytest.mark.parametrize("module", sorted(MODULES))
    def test_imports_run_down(self, module):
        """A module imports only its own layer or layers below it, and a lower layer only through its facade."""
        assert violations(module, GRAPH[module]) == []

    def test_finds_planted_violations(self):
        """An upward import and a facade bypass (objects reaching kernel.cobj) are both reported."""
        found = violations("tornado_dsm.objects._vm", {"tornado_dsm._cluster", "tornado_dsm.kernel.cobj",
                                                       "tornado_dsm.kernel"})
        assert found == ["tornado_dsm.objects._vm imports tornado_dsm._cluster, a layer above it",
                         "tornado_dsm.objects._vm imports tornado_dsm.kernel.cobj: use the facade tornado_dsm.kernel"]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None (iterative DFS with colours)."""
    colour = dict.fromkeys(graph, 0)
    for start in sorted(graph):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
            elif colour[child] == 1:
                path = [n for n, _ in stack]
                return path[path.index(child):] + [child]
            elif colour[child] == 0:
                colour[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
    return None


class TestCycles:
    def test_no_cycle(self):
        """The module import graph has no cycle."""
        assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))

    def test_finds_a_planted_cycle(self):
        """The cycle finder reports a cycle it is given (so the test above can fail)."""
        assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]

    def test_sees_every_layer(self):
        """Every layer has modules, so no rule is checked against nothing."""
        assert {layer(m) for m in MODULES} == set(RANKS)
