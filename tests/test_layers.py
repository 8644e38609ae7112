"""The layers hold: every import of rrstore and cli points down (or sideways within a layer), and no
module reaches itself through imports.

Read from the source with ``ast``, so imports inside functions and under
``TYPE_CHECKING`` count too: an upward import is wrong wherever it sits. The
layers, bottom first, are those of docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Bottom first; a module may import its own layer and the ones before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("rrstore.errors", "rrstore.lanes", "rrstore.config", "rrstore.fsutil", "rrstore.lock",
                     "rrstore.heap")),
    ("backends", ("rrstore.backends", "rrstore.remoteconfig")),
    ("store", ("rrstore.store",)),
    ("trees and records", ("rrstore.tree", "rrstore.record", "rrstore.recordindex")),
    ("working tree", ("rrstore.worktree",)),
    ("verbs", ("rrstore.checkpoint", "rrstore.diff", "rrstore.patch", "rrstore.restore", "rrstore.undo", "rrstore.gc",
               "rrstore.remote_gc", "rrstore.remote_check", "rrstore.remote_lease",
               "rrstore.check", "rrstore.repair", "rrstore.transfer", "rrstore.remote", "rrstore.remote_packs",
               "rrstore.archive", "rrstore.staging",
               "rrstore.status", "rrstore.schedule", "rrstore.browse", "rrstore.examine", "rrstore.stats")),
    ("recovery", ("rrstore.recovery",)),
    ("reports", ("rrstore.report",)),
    ("facade", ("rrstore.system", "rrstore", "rrstore.__main__")),
    ("cli", ("cli",)),
]


def modules() -> dict[str, Path]:
    found = {}
    for top in ("rrstore", "cli"):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = modules()


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for number, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), number
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return rank


def _typing_only(tree: ast.Module) -> set[int]:
    """Line numbers of the imports under ``if TYPE_CHECKING:`` (annotations only: never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        lines.add(sub.lineno)
    return lines


def imports(module: str, *, typing: bool = True) -> set[str]:
    """The rrstore/cli modules ``module`` imports anywhere in its source (``typing=False``: leaving out
    those under TYPE_CHECKING, which never run and so cannot make a cycle at import time)."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text(), str(path))
    skip = set() if typing else _typing_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "rrstore" and all(a.name == "__version__" for a in node.names):
                continue  # the package's own version: rrstore/__init__ imports nothing when loaded
            named = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            found.update(named or [target])
    return {m for m in found if m in MODULES and m != module}


GRAPH = {module: imports(module) for module in MODULES}
RUNTIME = {module: imports(module, typing=False) for module in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module: str) -> None:
    here = layer_of(module)
    upward = sorted(f"{target} ({LAYERS[layer_of(target)][0]})" for target in GRAPH[module]
                    if layer_of(target) > here)
    assert not upward, f"{module} ({LAYERS[here][0]}) imports a layer above it: {', '.join(upward)}"


def test_no_import_cycle() -> None:
    """Depth-first search for a back edge among the imports that run; the first cycle is named in full."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(RUNTIME[module]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(MODULES):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walk_sees_imports_inside_functions_and_under_type_checking() -> None:
    """So an upward import cannot hide in a function body or a typing-only block."""
    assert "rrstore.archive.files" in GRAPH["rrstore.system"]  # imported inside export()
    assert "rrstore.recovery.ports" in GRAPH["rrstore.recovery.run"]  # under TYPE_CHECKING
    assert layer_of("rrstore.system") > layer_of("rrstore.recovery.run") > layer_of("rrstore.checkpoint")
