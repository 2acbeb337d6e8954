"""The import graph of src/warmstart: no circle, and no import that runs up a layer (docs/design.md).

Every ``import`` / ``from ... import`` statement counts, at module level or inside a function (a deferred
import still ties the two modules together). The layers, lowest first: the top-level modules (errors,
files, checks, runtime), ``arch/``, ``checkpoint/``, ``data/`` and ``init/`` (side by side), ``train/``,
``release/``, ``cli/``, and ``python -m warmstart`` (``__main__``) on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import warmstart

SRC = Path(warmstart.__file__).resolve().parent
LAYERS = {"arch": 1, "checkpoint": 2, "data": 3, "init": 3, "train": 4, "release": 5, "cli": 6}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = ("warmstart", *path.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _known(name: str) -> str | None:
    """The warmstart module ``name`` lies in (a name imported from a module is that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        names = [f"{base}.{a.name}" for a in node.names]
    found = (_known(n) for n in names if n.split(".")[0] == "warmstart")
    return sorted({t for t in found if t is not None and t != module})


def import_graph() -> dict[str, list[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = sorted({t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                                for t in _targets(module, node)})
    return graph


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _layer(module: str) -> int:
    if module == "warmstart.__main__":
        return max(LAYERS.values()) + 1
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 and (SRC / parts[1]).is_dir() else 0


def test_the_graph_is_read():
    graph = import_graph()
    assert "warmstart.train.loop" in graph["warmstart.train"]  # the package re-exports pretrain
    assert "warmstart.errors" in graph["warmstart.checkpoint.load"]
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert _cycles(import_graph()) == []


def test_no_import_runs_up_a_layer():
    up = [f"{m} -> {t}" for m, targets in import_graph().items() for t in targets if _layer(t) > _layer(m)]
    assert up == []


def test_nothing_below_the_cli_imports_it():
    below = ("arch", "checkpoint", "data", "init", "train")
    bad = [f"{m} -> {t}" for m, targets in import_graph().items() if m.split(".")[1:2] and m.split(".")[1] in below
           for t in targets if t.startswith("warmstart.cli")]
    assert bad == []
