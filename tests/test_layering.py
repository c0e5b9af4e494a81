"""The package's layers, as ``geventflask/__init__.py`` lists them, hold.

Every import between the package's modules is read from the source with
``ast``: at module level and inside functions alike (a function-local import
is still a dependency, only a later one). Imports under ``if TYPE_CHECKING:``
are left out: they never run. A module may import only modules of the
layers listed before its own, so there is no cycle either.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import geventflask

PACKAGE = Path(geventflask.__file__).parent


def layers() -> list[list[str]]:
    """The layers of the package's top docstring, bottom first: each bullet
    of its layering list names one layer's modules, in double backquotes."""
    doc = geventflask.__doc__ or ""
    section = doc.split("Layering", 1)[1].split("\n\n", 2)[1]
    found = []
    for bullet in re.split(r"^\* ", section, flags=re.MULTILINE)[1:]:
        head = bullet.split(":", 1)[0]
        found.append(re.findall(r"``(\w+)``", head))
    return found


def modules() -> list[str]:
    return sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(nodes: list[ast.stmt] | list[ast.AST]) -> list[ast.AST]:
    found: list[ast.AST] = []
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            found.extend(_import_nodes(node.orelse))
        else:
            found.extend(_import_nodes(list(ast.iter_child_nodes(node))))
    return found


def imports_of(name: str) -> set[str]:
    """The package's modules that module *name* imports, anywhere in it."""
    package = geventflask.__name__
    known = set(modules())
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    found = set()
    for node in _import_nodes(tree.body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif not isinstance(node, ast.ImportFrom):
            continue
        elif node.level == 0:
            targets = [node.module or ""]
            targets += [f"{node.module}.{alias.name}" for alias in node.names]
        else:  # relative: the package has no subpackages, so "." is it
            base = f"{package}.{node.module}" if node.module else package
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            parts = target.split(".")
            if parts[0] == package and len(parts) > 1 and parts[1] in known:
                found.add(parts[1])
    found.discard(name)
    return found


def test_every_module_has_one_layer():
    listed = [name for layer in layers() for name in layer]
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    assert sorted(listed) == modules(), (
        "geventflask/__init__.py's layering list and the package's modules"
        " differ; add each new module to the list, in its layer"
    )


@pytest.mark.parametrize("name", modules())
def test_module_imports_only_layers_below_its_own(name):
    rank = {module: i for i, layer in enumerate(layers()) for module in layer}
    upward = sorted(
        other for other in imports_of(name) if rank.get(other, -1) >= rank[name]
    )
    assert not upward, (
        f"geventflask.{name} imports {upward}, which are not in a layer below"
        f" its own (see the layering list in geventflask/__init__.py)"
    )


def test_no_import_cycle():
    graph = {name: imports_of(name) for name in modules()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_the_package_imports_only_patching_at_load():
    assert imports_of("__init__") == {"patching"}


def test_type_checking_imports_are_left_out_and_local_ones_counted():
    # The reader itself: loop_greenlets names loop only for the type checker,
    # and patching imports flask_hooks only inside patch().
    assert "loop" not in imports_of("loop_greenlets")
    assert "flask_hooks" in imports_of("patching")
