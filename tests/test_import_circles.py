"""No import circles inside `peftrun`: each module's imports form a graph without cycles, so every
module can be read (and loaded) after the ones it uses.

Counted: every `import`/`from … import` statement, at module level, inside functions (deferred
imports are how circles hid: they only avoid a start-up crash, not the tangle) and under
`if TYPE_CHECKING:` (a module that needs another's types to be written depends on it: `runs.py` ↔
`run_card.py` was a circle of exactly that kind). Relative imports are resolved; `from package
import module` counts as importing that module, `from package import name` as importing the
package's `__init__`. Not counted: the imports out of `peftrun/__init__.py`, the front door
(`__version__`, and `peftrun.load` importing the serving API on first use), which by design sits
above every module that reads `__version__` from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "peftrun"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def import_statements(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in a module, wherever it is."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The `peftrun` modules that module `name` (at `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in import_statements(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import x`: the module pkg.x if there is one, else a name from pkg/__init__.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        out |= {target for target in targets if target in known and target != name}
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported(name, path, known) for name, path in found.items() if name != "peftrun"}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_circles_and_deferred_and_type_only_imports():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import peftrun.runs\n"
        "def f():\n    from peftrun import run_card\n"
    )
    shown = sorted(ast.unparse(node) for node in import_statements(tree))
    assert shown == [
        "from peftrun import run_card",
        "from typing import TYPE_CHECKING",
        "import peftrun.runs",
    ]


def test_no_import_circles_inside_peftrun():
    edges = graph()
    assert "peftrun.runs" in edges and edges["peftrun.studies.report"], "the graph was not built"
    found = circles(edges)
    assert found == [], "import circles (break each: move what both need to its own module)"
