"""The package's shape, checked from its source (docs/architecture.md):

* dependencies point one way: the graph of sub-package imports (module level and inside functions alike) has no
  cycle, and ``holder_nemo.nemo_rl`` (the plugin) imports no environment;
* ``holder_nemo/core`` imports nothing but torch and the standard library.

There is no size cap: a module is as long as its one job needs, a function as long as its one step (issue "The house,
pruned" retired the 300 / 60-line rule, which split flows and packed arguments to stay under it).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "holder_nemo"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _unit(module: str) -> str:
    """The sub-package (``holder_nemo.core``) or top-level module (``holder_nemo.cli``) a module belongs to."""
    return ".".join(module.split(".")[:2])


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in _modules().items():
        for target in _imports(path):
            if target.startswith("holder_nemo.") and _unit(target) != _unit(module):
                graph[_unit(module)].add(_unit(target))
    return graph


def test_sub_package_imports_have_no_cycle():
    graph = _package_graph()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_plugin_and_the_maths_import_no_environment():
    graph = _package_graph()
    environments = {"holder_nemo.alfworld", "holder_nemo.eval"}
    assert not graph["holder_nemo.nemo_rl"] & environments, graph["holder_nemo.nemo_rl"]
    assert graph["holder_nemo.core"] == set()
    assert graph["holder_nemo.distributed"] == {"holder_nemo.core"}


def test_core_imports_only_torch_and_the_standard_library():
    for module, path in _modules().items():
        if _unit(module) != "holder_nemo.core":
            continue
        for name in _imports(path):
            top = name.split(".")[0]
            assert top in ("torch", "holder_nemo") or top in sys.stdlib_module_names, f"{module} imports {name}"
            assert top != "holder_nemo" or name.startswith("holder_nemo.core"), f"{module} imports {name}"
