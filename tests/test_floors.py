"""docs/architecture.md, "Who may import whom", checked for every module of the package.

Each module sits on a floor; it may import (at module level or inside a function) only
modules on lower floors, or modules of its own package (``jaxviz.models.*`` among
themselves, ``jaxviz.synthesis.*`` among themselves), and a package's ``__init__`` may
re-export its children. The table below is the document's, module by module: a new
module fails here until it is given a floor.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FLOORS = {
    0: ("jaxviz.errors", "jaxviz._xla_flags", "jaxviz._random", "jaxviz._host"),
    1: ("jaxviz.rules", "jaxviz.models.layers", "jaxviz.render", "jaxviz.data",
        "jaxviz.static", "jaxviz.cpu", "jaxviz.gpu", "jaxviz.parallel"),
    2: ("jaxviz.models", "jaxviz.switches", "jaxviz.stream"),
    3: ("jaxviz.checks",),
    4: ("jaxviz.capture",),
    5: ("jaxviz.objectives",),
    6: ("jaxviz.attribution", "jaxviz.synthesis"),
    7: ("jaxviz.analysis",),
    8: ("jaxviz",),  # the package's __init__: re-exports
    9: ("jaxviz.commands",),
    10: ("jaxviz.cli",),
    11: ("jaxviz.__main__",),
}


def floor(module: str) -> int:
    """The floor of ``module``: its longest prefix in the table."""
    best, level = "", None
    for f, names in FLOORS.items():
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, level = name, f
    assert level is not None, f"{module} has no floor: add it to docs/architecture.md and here"
    return level


def package_of(module: str) -> str:
    """``jaxviz.models`` for ``jaxviz.models.vgg``; the module itself for a top-level one."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted((ROOT / "jaxviz").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts)
        out.append((name.removesuffix(".__init__"), path))
    return out


def our_imports(module: str, path: Path) -> set[str]:
    """Every jaxviz module ``path`` imports, resolved to modules where they are modules."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "jaxviz" or node.module.startswith("jaxviz.")):
            for a in node.names:  # (other packages are not resolved: they may be optional)
                child = f"{node.module}.{a.name}"
                found.add(child if importlib.util.find_spec(node.module) and
                          _is_module(child) else node.module)
    return {m for m in found if m == "jaxviz" or m.startswith("jaxviz.")}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("module,path", modules(), ids=[m for m, _ in modules()])
def test_imports_stay_on_the_allowed_floors(module, path):
    here = floor(module)
    for imported in our_imports(module, path):
        if imported == module:
            continue
        same_package = package_of(imported) == package_of(module) and module != "jaxviz"
        reexport = path.name == "__init__.py" and imported.startswith(module + ".")
        assert floor(imported) < here or same_package or reexport, (
            f"{module} (floor {here}) imports {imported} (floor {floor(imported)})")


def test_the_table_parsed_every_module():
    names = [m for m, _ in modules()]
    assert {"jaxviz.capture", "jaxviz.checks", "jaxviz.models.vgg", "jaxviz.synthesis.optimize"} <= set(names)
    assert our_imports("jaxviz.attribution._common", ROOT / "jaxviz" / "attribution" / "_common.py") >= {
        "jaxviz.capture", "jaxviz.checks", "jaxviz.objectives"}
