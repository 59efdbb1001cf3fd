"""The package's import direction: no cycles between hdiff's modules (lazy imports inside functions included), and
the runtime path (command line, build flow, adapters, engine) never imports benchmarks or the trainer."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ["hdiff.cli", "flows.build_dataset", "hdiff.models.loading", "hdiff.generate", "hdiff.dataset.pipeline"]
NOT_RUNTIME = ("hdiff.bench", "hdiff.shapes_training.train", "hdiff.shapes_training.embed_prompts")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """hdiff modules `path` imports anywhere in its body (`from a.b import c` counts a.b.c when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    files = [p for folder in ("hdiff", "flows") for p in (ROOT / folder).rglob("*.py")]
    known = {module_name(p) for p in files}
    graph = {module_name(p): imports_of(p, known) for p in files}
    for name in graph:  # importing a.b.c runs a/__init__ and a/b/__init__ first
        graph[name] -= {name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_no_import_cycles():
    graph = import_graph()
    packages = {name for name in graph if (ROOT / name.replace(".", "/") / "__init__.py").exists()}
    cycles = sorted(f"{a} ↔ {b}" for a in graph for b in reachable(graph, a)
                    if a < b and a in reachable(graph, b) and not {a, b} & packages)
    assert cycles == []


def test_the_runtime_path_imports_no_benchmark_and_no_trainer():
    graph = import_graph()
    for start in RUNTIME:
        assert sorted(m for m in reachable(graph, start) if m.startswith(NOT_RUNTIME)) == [], start
