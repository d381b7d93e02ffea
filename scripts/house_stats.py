"""List the largest modules and functions of the package and the analysis scripts.

Usage: python scripts/house_stats.py [N]   (N defaults to 10)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = ("skipnet_sweep", "analysis")


def _sources() -> list[Path]:
    return sorted(p for tree in TREES for p in (ROOT / tree).rglob("*.py"))


def _functions(path: Path) -> list[tuple[int, str]]:
    """(lines, qualified name) of every function and method in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                found.append((child.end_lineno - child.lineno + 1, name))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def main(n: int = 10) -> None:
    modules = []
    functions = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        modules.append((len(path.read_text().splitlines()), rel))
        functions += [(lines, f"{rel}:{name}") for lines, name in _functions(path)]
    print(f"{n} largest modules (lines):")
    for lines, rel in sorted(modules, reverse=True)[:n]:
        print(f"  {lines:6d}  {rel}")
    print(f"{n} largest functions (lines):")
    for lines, name in sorted(functions, reverse=True)[:n]:
        print(f"  {lines:6d}  {name}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
