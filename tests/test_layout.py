"""The house's layering (issue 41), read from the source: no private name imported across modules, and
no import cycle among zoo's modules at import time (imports inside functions are deferred on purpose:
``--list`` never imports the strategies, a registry never imports a component)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "zoo").rglob("*.py"), *(ROOT / "heads").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")])


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "heads":  # installed as zoo.heads
        parts = ["zoo", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool):
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], node.lineno


def test_no_private_name_is_imported_from_another_module():
    crossing = [f"{p.relative_to(ROOT)}:{line}: {name} from {mod}" for p in SOURCES
                for mod, names, line in _imports(p, top_level_only=False)
                for name in names if name.startswith("_") and not name.startswith("__")]
    assert not crossing, "private names imported across modules (make them public, or keep them home):\n" + \
        "\n".join(crossing)


def test_zoo_has_no_import_cycle_at_import_time():
    modules = {_module(p): p for p in SOURCES if p.parts[-2] != "benchmarks"}
    graph = {m: sorted({mod for mod, _, _ in _imports(p, top_level_only=True) if mod in modules and mod != m})
             for m, p in modules.items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for n in graph[m]:
            if seen.get(n) == 1:
                cycles.append(" -> ".join(path[path.index(n):] + [n]) if n in path else f"{m} -> {n}")
            elif n not in seen:
                visit(n, path + [n])
        seen[m] = 2

    for m in graph:
        if m not in seen:
            visit(m, [m])
    # the package's __init__ re-exports its submodules' names (they import it only as a package)
    cycles = [c for c in cycles if not c.startswith("zoo -> ") and " -> zoo -> " not in c and not c.endswith(" -> zoo")]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
