"""No import in ``aioxdp/`` runs from a lower layer to a higher one (DESIGN.md, "Layers as
they should stand"): the command line leans on serving, serving on the loop, the loop on
the stack, the stack on the data path and the TCP core, and never the other way round,
not even as a lazy import inside a function or one made for type checking only. Where a
lower layer needs something of a higher one, the higher one passes it in.

The imports are read with ``ast``, so a module that cannot be imported here (no native
build, no root) is checked all the same. Every module must be on the map: a new one is
placed on purpose, not by accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aioxdp"

# Lowest first. A module may import its own layer and those below it. A name ending in
# "." covers a package and everything in it; any other name is one module.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the sans-IO TCP core", ("aioxdp.tcp.",)),
    ("the platform: settings, the poll rule, netlink, the AF_XDP rings, test topologies",
     ("aioxdp.settings", "aioxdp.polling", "aioxdp.kernel", "aioxdp._xsk.",
      "aioxdp.topology")),
    ("what runs beside the rings: protection rules, the workers' relay, the stats socket",
     ("aioxdp.protect", "aioxdp.relay", "aioxdp.statsserver", "aioxdp.strays",
      "aioxdp.impair")),
    # the stack makes transports and delivers their events; a transport calls its stack
    ("the stack and its transports", ("aioxdp.stack", "aioxdp.transport")),
    ("the event loop, and the package face that hands out its entry points",
     ("aioxdp.loop", "aioxdp")),
    ("serving applications (aiohttp, ASGI, async mains); the pytest plugin",
     ("aioxdp.serving", "aioxdp.pytest_plugin")),
    ("commands: worker processes, stats display, topologies, filter, the demo",
     ("aioxdp.workers", "aioxdp.statsview", "aioxdp.topo_cli", "aioxdp.protect_cli",
      "aioxdp.demo")),
    ("the command line", ("aioxdp.cli", "aioxdp.__main__")),
)


def layer_of(module: str) -> int | None:
    """The index of ``module``'s layer; None for a module outside the package (or unmapped)."""
    for index, (_name, members) in enumerate(LAYERS):
        for member in members:
            if module == member.rstrip(".") or (member.endswith(".")
                                               and module.startswith(member)):
                return index
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``, at any depth (inside functions,
    ``if TYPE_CHECKING:`` blocks...), relative ones resolved against ``module``.
    ``from X import Y`` counts as X.Y when that is a module of the package, else X."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base = ".".join(base_parts[:len(base_parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if _is_module(sub) else target))
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def upward_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Each import of ``source`` that reaches a higher layer than ``module``'s, described."""
    own = layer_of(module)
    assert own is not None, f"{module} is on no layer of LAYERS: place it"
    problems = []
    for line, target in imported_modules(source, module, is_package=is_package):
        if not target.startswith("aioxdp"):
            continue
        layer = layer_of(target)
        if layer is None:
            problems.append(f"{module}:{line} imports {target}, which is on no layer")
        elif layer > own:
            problems.append(f"{module}:{line} imports {target} ({LAYERS[layer][0]}) from "
                            f"below ({LAYERS[own][0]})")
    return problems


def package_sources() -> list[Path]:
    return sorted(p for pattern in ("*.py", "*.pyi") for p in PACKAGE.rglob(pattern))


def test_every_module_is_on_a_layer() -> None:
    unplaced = sorted({module_name(p) for p in package_sources()
                       if layer_of(module_name(p)) is None})
    assert unplaced == [], "add these to LAYERS, where they belong"


@pytest.mark.parametrize("path", package_sources(),
                         ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_import_runs_upward(path: Path) -> None:
    module = module_name(path)
    assert upward_imports(path.read_text(), module,
                          is_package=path.stem == "__init__") == []


def test_the_check_sees_lazy_and_type_only_imports() -> None:
    """The check itself: an upward import hidden in a function, in a TYPE_CHECKING
    block, or written relative to a subpackage is found; a downward one is not."""
    source = '''
from typing import TYPE_CHECKING
from .tcp import wire
if TYPE_CHECKING:
    from .loop import XdpSelectorEventLoop
def late():
    from . import serving
'''
    assert upward_imports(source, "aioxdp.stack") == [
        "aioxdp.stack:5 imports aioxdp.loop (the event loop, and the package face that hands "
        "out its entry points) from below (the stack and its transports)",
        "aioxdp.stack:7 imports aioxdp.serving (serving applications (aiohttp, ASGI, async "
        "mains); the pytest plugin) from below (the stack and its transports)",
    ]
    assert upward_imports("from ..protect import Protection\n", "aioxdp._xsk",
                          is_package=True) == [
        "aioxdp._xsk:1 imports aioxdp.protect (what runs beside the rings: protection rules, "
        "the workers' relay, the stats socket) from below (the platform: settings, the poll rule, "
        "netlink, the AF_XDP rings, test topologies)",
    ]
    assert upward_imports("import aioxdp.tcp.wire\nfrom ._xsk import lib\n",
                          "aioxdp.protect") == []
