"""The house's layering (issue 41), read from the source: layers only point down (the README's "Layout"),
each name is imported from the module that defines it, no private name is imported across modules, tests
included (nor read as an attribute by a benchmark), and no import cycle among zoo's modules at import time
(imports inside functions are deferred on purpose: ``--list`` never imports the strategies, a registry never
imports a component)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "zoo").rglob("*.py"), *(ROOT / "heads").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")])
TESTS = sorted((ROOT / "tests").glob("*.py"))


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


#: The README's "Layout", lowest layer first: a module imports from its own group and from groups on lower
#: layers only, whether at import time or inside a function. Groups on one layer are peers that never read each
#: other (data, encoders and heads read only core; tasks resolve heads against data). Above them all, the entry
#: points: the modules at zoo/'s root (the Python API in __init__, bench, predict, export, train) and
#: ``python -m zoo.data``'s __main__. There is no exception.
LAYERS = (("core",), ("data", "encoders", "heads"), ("tasks",), ("engine",), ("runs",), ("use",), ("entry points",))
#: leaves every layer may read: they import nothing of zoo
LEAVES = {"zoo.version"}
ZOO = sorted([*(ROOT / "zoo").rglob("*.py"), *(ROOT / "heads").rglob("*.py")])


def _group(path: Path) -> str:
    if path.parent == ROOT / "zoo" or path.name == "__main__.py":
        return "entry points"
    return _module(path).split(".")[1]


def _imported_modules(path: Path, modules: dict[str, Path]):
    """The zoo modules ``path`` imports, at import time or inside a function: ``from zoo.core import files``
    imports zoo.core.files, ``from zoo.core.files import atomic_write_text`` zoo.core.files."""
    for mod, names, line in _imports(path, top_level_only=False):
        for target in [f"{mod}.{n}" for n in names if f"{mod}.{n}" in modules] or [mod]:
            if target in modules:
                yield target, line


def test_layers_only_point_down():
    modules = {_module(p): p for p in ZOO}
    rank = {group: i for i, groups in enumerate(LAYERS) for group in groups}
    unplaced = sorted({f"{p.relative_to(ROOT)}: group {_group(p)!r} is on no layer (place it in the README's Layout "
                       "and in LAYERS)" for m, p in modules.items() if m not in LEAVES and _group(p) not in rank})
    assert not unplaced, "\n".join(unplaced)
    wrong = []
    for m, p in modules.items():
        for target, line in _imported_modules(p, modules):
            where = f"{p.relative_to(ROOT)}:{line}: {m} imports {target}"
            if m in LEAVES:
                wrong.append(f"{where} (a leaf imports nothing of zoo)")
            elif target not in LEAVES and _group(modules[target]) != _group(p) and \
                    rank[_group(modules[target])] >= rank[_group(p)]:
                wrong.append(f"{where} ({_group(modules[target])} is not below {_group(p)})")
    assert not wrong, "imports that do not point down (the README's Layout):\n" + "\n".join(wrong)


def _bound(body: list[ast.stmt]) -> set[str]:
    """The names a module's own statements bind at top level (inside if/try/with too, never in a function)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For)):
            names |= _bound([*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                             *(s for h in getattr(node, "handlers", []) for s in h.body)])
    return names


def test_each_name_is_imported_from_the_module_that_defines_it():
    """One import path per public name: a module that merely imports a name is not a second place to import it
    from (zoo/__init__.py and zoo/train.py gather names for users; zoo's own modules never import through them)."""
    modules = {_module(p): p for p in ZOO}
    bound = {m: _bound(ast.parse(p.read_text()).body) for m, p in modules.items()}
    relayed = [f"{p.relative_to(ROOT)}:{line}: {name} from {mod}, which does not define it" for p in SOURCES
               for mod, names, line in _imports(p, top_level_only=False) if mod in modules
               for name in names if name != "*" and f"{mod}.{name}" not in modules and name not in bound[mod]]
    assert not relayed, "names imported through a module that only imports them (import from the owner):\n" + \
        "\n".join(relayed)


def test_benchmarks_read_no_private_attribute():
    """What the import checks cannot see: a benchmark reading ``x._name`` or passing ``_name=`` uses a private
    part of zoo (``self``/``cls`` are a script's own)."""
    private = []
    for p in SOURCES:
        if p.parts[-2] != "benchmarks":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            name = (node.attr if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and
                                                                          node.value.id in ("self", "cls"))
                    else node.arg if isinstance(node, ast.keyword) else None)
            if name and name.startswith("_") and not name.startswith("__"):
                private.append(f"{p.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not private, "benchmarks reading private parts of zoo:\n" + "\n".join(private)


def test_no_private_name_is_imported_from_another_module():
    """In zoo, heads, benchmarks and the tests: a test reaches zoo through its public names, as a user does (a test
    file may import its own helpers from conftest.py, which are shared by design, whatever their names)."""
    crossing = [f"{p.relative_to(ROOT)}:{line}: {name} from {mod}" for p in [*SOURCES, *TESTS]
                for mod, names, line in _imports(p, top_level_only=False) if mod != "conftest"
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
