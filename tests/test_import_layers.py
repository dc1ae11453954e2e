"""Imports flow one way: no module of the project imports, even inside a function, anything that imports it
back, and every import goes to the same layer or a lower one, in the order of docs/architecture.md's table.

Every import statement is read from the source (function bodies, `if TYPE_CHECKING:` blocks and `__main__`
guards included), so a deferred import that would close a circle fails here like a top-level one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("revise_core", "trainer", "nodes", "bench", "workflows")
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every Python file of the project's packages (the root `__init__.py`
    is ComfyUI's entry point: the module `comfyui_entry` here)."""
    modules = {"comfyui_entry": ROOT / "__init__.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that `name` (a module or a name inside one) belongs to, if any."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `module` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module == "comfyui_entry":  # the root package: `from .nodes import ...`
                    base: list[str] = []
                else:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from package import submodule` imports the submodule; `from module import name` the module
            targets = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix
                       for alias in node.names]
        else:
            continue
        for target in targets:
            owner = _owner(target, modules)
            if owner is not None and owner != module:
                found.add(owner)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def layer_table() -> list[tuple[str, list[str]]]:
    """(layer name, module patterns) from the table under '## Layers' in docs/architecture.md, bottom first."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"\d+\. .+", cells[0]):
            rows.append((cells[0], re.findall(r"`([^`]+)`", cells[1])))
    return rows


def layer_of(module: str, table: list[tuple[str, list[str]]]) -> int | None:
    """The layer whose most specific pattern matches: `a.b` names the module a.b, `a.b.*` the package a.b and
    every module under it."""
    best: tuple[int, int] | None = None  # (specificity, layer)
    for number, (_, patterns) in enumerate(table):
        for pattern in patterns:
            if pattern.endswith(".*"):
                matches = module == pattern[:-2] or module.startswith(pattern[:-1])
                specificity = len(pattern) - 2
            else:
                matches = module == pattern
                specificity = len(pattern) + 1  # an exact name beats a pattern of the same length
            if matches and (best is None or specificity > best[0]):
                best = (specificity, number)
    return None if best is None else best[1]


def test_the_cycle_finder_sees_a_deferred_import_circle(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from pkg import other\n", encoding="utf-8")
    assert imports_of("pkg.m", source, {"pkg": tmp_path, "pkg.m": source, "pkg.other": tmp_path}) == {"pkg.other"}


def test_no_import_circle_in_the_project():
    cycles = find_cycles(import_graph())
    assert not cycles, "modules importing each other (move the shared names into a lighter module): " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles)


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_layers():
    table = layer_table()
    assert len(table) >= 8, f"{ARCHITECTURE}: the '## Layers' table was not found"
    graph = import_graph()
    unplaced = sorted(module for module in graph if layer_of(module, table) is None)
    assert not unplaced, f"modules with no layer in {ARCHITECTURE.name}'s table (add them there): {unplaced}"
    upward = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module, table)
        for target in sorted(targets):
            theirs = layer_of(target, table)
            if theirs > mine:
                upward.append(f"{module} ({table[mine][0]}) imports {target} ({table[theirs][0]})")
    assert not upward, "imports against the layer order of docs/architecture.md:\n" + "\n".join(upward)


def test_the_layer_check_catches_an_upward_import():
    table = [("1. low", ["pkg.low"]), ("2. high", ["pkg.high", "pkg.sub.*"])]
    names = ("pkg.low", "pkg.high", "pkg.sub", "pkg.sub.x", "pkg.other", "pkg.subway")
    assert [layer_of(name, table) for name in names] == [0, 1, 1, 1, None, None]
