"""The package's import structure: its rooms (a top-level module, or a subpackage) import
each other without a circle, and the layers the README names hold (the training code below the
methods, the methods below the runner, the runner below the sweep)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "skipnet_sweep"


def _room(module: str) -> str:
    """``skipnet_sweep.sweep.space.schema`` -> ``sweep``; ``skipnet_sweep.run`` -> ``run``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """Every ``skipnet_sweep`` module ``path`` imports, at any depth of its code."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = (
                package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            )
            target = ".".join([*base, *([node.module] if node.module else [])])
            # `from skipnet_sweep import metrics` imports the module skipnet_sweep.metrics
            found |= {f"{target}.{alias.name}" for alias in node.names} | {target}
    return {m for m in found if m.startswith("skipnet_sweep.")}


def room_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        here = _room(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for target in _imports(path):
            there = _room(target)
            is_room = (PACKAGE / there).is_dir() or (PACKAGE / f"{there}.py").exists()
            if there and there != here and is_room:
                edges.setdefault(here, set()).add(there)
    return edges


def _reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_room_imports_itself_through_another():
    edges = room_graph()
    circles = sorted(room for room in edges if room in _reachable(edges, room))
    assert circles == [], f"rooms on an import circle: {circles}"


def test_the_layers_hold():
    edges = room_graph()
    below = {
        "models": {"stages", "methods", "runner", "sweep", "reporting", "run", "train"},
        "stages": {"methods", "runner", "sweep", "reporting", "run", "train"},
        "methods": {"runner", "sweep", "reporting", "run", "train"},
        "runner": {"sweep", "run", "train"},
        "reporting": {"sweep", "runner", "methods", "stages", "run", "train"},
    }
    for room, above in below.items():
        reached = _reachable(edges, room)
        assert not reached & above, f"{room} imports {sorted(reached & above)}, above it"


def test_the_graph_sees_imports():
    """The parser finds the imports it must (a test that cannot fail is a defect)."""
    edges = room_graph()
    assert {"methods", "stages"} <= edges["runner"]
    assert "stages" in edges["methods"] and "methods" in edges["sweep"]
