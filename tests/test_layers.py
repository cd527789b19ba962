"""The package is a stack: no import cycles, and no module imports from a layer above its own.

Every import counts, also those inside functions (a lazy import is still a dependency). Families are found by
the registry through the catalogue's module names (importlib), not by an import statement."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first; a module may import from its own layer and those below it
LAYERS = [
    {
        "morphgen",
        "errors",
        "nifti",
        "tsv",
        "space",
        "resample",
        "antsio",
        "weights",
        "png",
        "fields",
        "templates",
    },
    {"segmentation", "preprocess", "split"},
    {"cohort", "metrics", "models"},
    {"report"},
    {"stages", "workflow", "config_reference", "cli"},
]
MODEL_LAYERS = [
    {"base", "catalogue", "covariates"},
    {"engine"},
    {"autoencoders"},
    {"families"},
    {"registry", "memory", "models"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def import_graph() -> dict[str, set[str]]:
    # a family's own tests live in its folder but are not part of the stack
    files = [p for p in (SRC / "morphgen").rglob("*.py") if not p.name.startswith("test_")]
    modules = {module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def rank(module: str) -> tuple[int, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "morphgen"
    outer = next(i for i, layer in enumerate(LAYERS) if top in layer)
    if top != "models":
        return outer, 0
    inner = parts[2] if len(parts) > 2 else "models"
    return outer, next(i for i, layer in enumerate(MODEL_LAYERS) if inner in layer)


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    # registry imports the families through importlib only; the workflow module imports torch-free parts
    assert "morphgen.models.catalogue" in graph["morphgen.models.registry"]
    assert "morphgen.segmentation.atropos" in graph["morphgen.segmentation.backends"]  # a lazy import
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_every_module_has_a_layer():
    unplaced = []
    for module in import_graph():
        try:
            rank(module)
        except StopIteration:
            unplaced.append(module)
    assert unplaced == [], "add these to LAYERS or MODEL_LAYERS"


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_no_module_imports_from_a_layer_above(module):
    upward = [t for t in sorted(import_graph()[module]) if rank(t) > rank(module)]
    assert upward == [], f"{module} imports from a layer above it"
