"""The import layers of src/vadasm, read from the source with ast (nothing is imported).

A package may import packages of its own layer or of lower layers, never of a higher one, and no two
packages may import each other through any chain; inside a package, no two modules may either (a
module that needs something from one that imports it shares the piece through a third module).
Imports inside functions count (they run); imports under `if TYPE_CHECKING:` do not (annotations
only). docs/architecture.md explains the order.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vadasm"

# Lowest first. "vadasm" is the package root (its __init__.py): the public names, imported by no module.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "version", "options", "paths"),  # leaves: the standard library only
    ("arch",),  # architectures as data, forward-hook capture
    ("io",),  # read and write checkpoints (checks a config against the architecture table)
    ("methods",),  # merge methods: pure tensor math + registry
    ("scale",),  # the Ray task pool
    ("eval",),  # tasks, metrics, backends, harness
    ("card", "hub"),  # a model card from recorded measurements; pushing a folder to the Hub
    ("align", "blend", "graft", "merge", "moe", "tokensurgeon", "transfer"),  # the operations
    ("tune",),  # searches over operations, scored by eval
    ("testbed",),  # builds the offline test models with everything below
    ("cli",),  # the commands
    ("vadasm", "__main__"),
]

# (importer, imported) package pairs that break the rules today, each with its reason. An entry whose
# import is gone fails test_allowed_exceptions_still_exist: remove it then.
ALLOWED: dict[tuple[str, str], str] = {}

# Module import cycles (sorted module names) that exist today, each with its reason. An entry that is no
# longer a cycle fails test_allowed_module_cycles_still_exist: remove it then.
ALLOWED_MODULE_CYCLES: dict[tuple[str, ...], str] = {}


def module_name(path: Path) -> str:
    """src/vadasm/merge/run.py -> 'vadasm.merge.run'; a package's __init__.py -> the package."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The vadasm modules that `source` (the text of `module`) imports when it runs."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            nodes = node.orelse
        else:
            nodes = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # `from vadasm.x import y` may name the module vadasm.x.y
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        for child in nodes:
            visit(child)

    visit(ast.parse(source))
    return {name for name in found if name == "vadasm" or name.startswith("vadasm.")}


def package_of(module: str) -> str:
    """'vadasm.eval.benchmarks.runner' -> 'eval'; the root package -> 'vadasm'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vadasm"


def package_graph() -> dict[str, dict[str, list[str]]]:
    """{package: {imported package: ['importing module -> imported module', ...]}} over src/vadasm."""
    files = {module_name(path): path for path in sorted(SRC.rglob("*.py"))}
    graph: dict[str, dict[str, list[str]]] = {package_of(m): {} for m in files}
    for module, path in files.items():
        for target in imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py",
                                       set(files)):
            source_package, target_package = package_of(module), package_of(target)
            if source_package != target_package:
                graph[source_package].setdefault(target_package, []).append(f"{module} -> {target}")
    return graph


def module_graph() -> dict[str, set[str]]:
    """{module: the other src/vadasm modules it names in an import}. A submodule's import does not add
    its parent package (Python runs that __init__ first, but it is not a cycle the code wrote)."""
    files = {module_name(path): path for path in sorted(SRC.rglob("*.py"))}
    return {module: imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py",
                                     set(files)) & (set(files) - {module})
            for module, path in files.items()}


def layer_of(package: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if package in names)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (top := stack.pop()) != node:
                group.append(top)
            if group:
                found.append(sorted([node, *group]))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_import_parser_on_a_small_module() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import vadasm.io\n"
        "from vadasm.arch import table\n"
        "from . import sibling\n"
        "from ..errors import VadasmError\n"
        "if TYPE_CHECKING:\n    from vadasm.cli import app\n"
        "def f():\n    from vadasm.eval.tasks import TASKS\n"
    )
    known = {"vadasm.arch.table", "vadasm.merge.sibling"}
    assert imported_modules(source, "vadasm.merge.run", False, known) == {
        "vadasm.io", "vadasm.arch.table", "vadasm.merge.sibling", "vadasm.errors", "vadasm.eval.tasks"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_package_has_a_layer() -> None:
    placed = {name for names in LAYERS for name in names}
    assert sorted(set(package_graph()) - placed) == []


def test_no_import_reaches_up_a_layer() -> None:
    upward = [f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)}): {where[0]}"
              for source, targets in package_graph().items() for target, where in targets.items()
              if layer_of(target) > layer_of(source) and (source, target) not in ALLOWED]
    assert upward == []


def test_no_import_cycle_between_packages() -> None:
    graph = {source: {t for t in targets if (source, t) not in ALLOWED}
             for source, targets in package_graph().items()}
    assert cycles(graph) == []


def test_no_import_cycle_between_modules() -> None:
    assert [group for group in cycles(module_graph()) if tuple(group) not in ALLOWED_MODULE_CYCLES] == []


def test_allowed_module_cycles_still_exist() -> None:
    found = {tuple(group) for group in cycles(module_graph())}
    assert [group for group in ALLOWED_MODULE_CYCLES if group not in found] == []


def test_allowed_exceptions_still_exist() -> None:
    graph = package_graph()
    assert [pair for pair in ALLOWED if pair[1] not in graph.get(pair[0], {})] == []
