"""The package's import direction, read from the source (imports inside functions included; importlib's are not read).

Packages are nodes too: importing a.b.c runs a/__init__ and a/b/__init__ first, so it counts as importing a and a.b
(except the packages that hold the importer, whose __init__ already runs), and a package's own imports are those of
its __init__. Three checks:
- no loop between modules, package __init__s included;
- no loop between the members of a package, each subpackage taken whole (hdiff.models and hdiff.shapes were such a
  loop: no two of their modules imported each other, but each package imported the other);
- every import runs down LAYERS: a module imports its own layer and those below it, never one above. So the runtime
  (command line, build flow, adapters, engine) never imports the benchmarks or the shapes training tools.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("hdiff", "flows")  # two roots: the layers alone order them (flows runs the build; hdiff.cli runs flows)

# bottom first. A name places its module, or its package and all the package holds; the nearest name wins. The root
# `hdiff` places its own __init__ (the version) only, so that a new module of hdiff finds its layer on purpose.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("hdiff", "hdiff.errors", "hdiff.machine", "hdiff.records", "hdiff.files", "hdiff.prompts",
                    "hdiff.devices", "hdiff.embedding", "hdiff.hub", "hdiff.validation")),
    ("planning", ("hdiff.planning",)),
    ("generation settings", ("hdiff.settings",)),
    ("the shapes world and model", ("hdiff.shapes",)),
    ("model adapters", ("hdiff.models",)),
    ("sampling", ("hdiff.sampling",)),
    ("generation", ("hdiff.generate", "hdiff.figures")),
    ("scoring", ("hdiff.scoring",)),
    ("dataset", ("hdiff.dataset",)),
    ("the dataset's build flow, loaders, publishing and pulling", ("flows", "hdiff.data", "hdiff.publish",
                                                                   "hdiff.pull")),
    ("the pilot", ("hdiff.pilot",)),
    ("command line", ("hdiff.cli",)),
    ("benchmarks", ("hdiff.bench",)),
    ("shapes training tools", ("hdiff.shapes_training",)),
]
PLACES = {name: index for index, (_, names) in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def named_imports(path: Path, known: set[str]) -> set[str]:
    """The modules `path` names in an import anywhere in its body: `from a.b import c` names a.b, and a.b.c when that
    is a module; a relative import is resolved against the file's package."""
    package = module_name(path).split(".")[:None if path.name == "__init__.py" else -1]
    named = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            named |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return {name for name in named if name in known}


def with_packages(importer: str, named: set[str], known: set[str]) -> set[str]:
    """The named modules and the packages above them, less the packages that hold `importer` (already importing)."""
    holders = {".".join(importer.split(".")[:end]) for end in range(1, importer.count(".") + 1)}
    parents = {".".join(name.split(".")[:end]) for name in named for end in range(1, name.count(".") + 1)}
    return (named | ((parents & known) - holders)) - {importer}


def import_graph() -> dict[str, set[str]]:
    files = [path for folder in SOURCES for path in (ROOT / folder).rglob("*.py")]
    known = {module_name(path) for path in files}
    return {module_name(path): with_packages(module_name(path), named_imports(path, known), known) for path in files}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one node, each sorted."""
    reach = {node: reachable(graph, node) for node in graph}
    found = {tuple(sorted(other for other in reach[node] if node in reach.get(other, ()))) for node in graph}
    return sorted(list(part) for part in found if len(part) > 1)


def ties_between_members(graph: dict[str, set[str]]) -> dict[tuple[str, str], set[str]]:
    """Imports between members of one package: `a.x.… → a.y.…` ties a.x to a.y; each tie with its imports."""
    ties: dict[tuple[str, str], set[str]] = {}
    for importer, imported in graph.items():
        for name in imported:
            source, target = importer.split("."), name.split(".")
            shared = next((i for i, (s, t) in enumerate(zip(source, target)) if s != t), min(len(source), len(target)))
            if 0 < shared < min(len(source), len(target)):  # one root, and neither holds the other
                tie = (".".join(source[:shared + 1]), ".".join(target[:shared + 1]))
                ties.setdefault(tie, set()).add(f"{importer} → {name}")
    return ties


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the nearest name that places `module`, or None."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in PLACES and (end == len(parts) or name != "hdiff"):
            return PLACES[name]
    return None


def test_no_import_loops_between_modules():
    found = [" ↔ ".join(part) for part in loops(import_graph())]
    assert not found, "\n".join(found)


def test_no_import_loops_between_the_members_of_a_package():
    ties = ties_between_members(import_graph())
    graph: dict[str, set[str]] = {}
    for source, target in ties:
        graph.setdefault(source, set()).add(target)
    found = ["\n  ".join([" ↔ ".join(part)] + [f"{source} → {target}: {', '.join(sorted(lines))}"
                                                for (source, target), lines in sorted(ties.items())
                                                if source in part and target in part])
             for part in loops(graph)]
    assert not found, "\n".join(found)


def test_every_module_has_a_layer():
    unplaced = sorted(module for module in import_graph() if layer_of(module) is None)
    assert not unplaced, f"no layer in LAYERS places {', '.join(unplaced)}"


def test_imports_run_down_the_layers():
    upward = [f"{importer} ({LAYERS[layer_of(importer)][0]}) imports {name} ({LAYERS[layer_of(name)][0]}), a layer "
              "above it" for importer, imported in sorted(import_graph().items()) for name in sorted(imported)
              if None not in (layer_of(importer), layer_of(name)) and layer_of(importer) < layer_of(name)]
    assert not upward, "\n".join(upward)
