"""The sans-IO TCP/IP core, compiled by mypyc when the package was built with it.

This file is the one module of the package that is never compiled: it runs
before any other is imported and decides which build of the core they come
from (``CORE``):

- ``"compiled"``: the extension modules that the build (setup.py, mypyc) put
  beside the sources, when they were compiled from exactly the sources that
  are here now (``BUILD_STAMP`` holds the sources' hash at build time);
- ``"pure"``: the ``.py`` sources, when there are no extension modules, when
  ``AIOXDP_PURE=1`` asks for them, or when the extension modules are older
  than the sources (an edited editable install): a stale compiled module
  would run old code against new tests, so the sources win and one warning
  says how to rebuild.

``CORE_REASON`` says why in words, for the start-up log line and the stats.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["CORE", "CORE_REASON", "choose", "compiled_state", "source_hash"]

HERE = Path(__file__).resolve().parent
# Written by the build beside the extension modules: the source_hash() they came from.
BUILD_STAMP = HERE / "_compiled.stamp"
PURE_ENV = "AIOXDP_PURE"


def sources(root: Path = HERE) -> list[Path]:
    """The modules the build compiles: every .py of the package but this one."""
    init = root / "__init__.py"
    return sorted(p for p in root.rglob("*.py") if p != init)


def source_hash(root: Path = HERE) -> str:
    """A hash of the compiled modules' sources (their paths and contents)."""
    digest = hashlib.sha256()
    for path in sources(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def compiled_state(root: Path) -> str:
    """"current" when the package at ``root`` has extension modules built from the
    sources there now, "stale" when they are older, "absent" when there are none
    (the build asks this too, to skip an in-place rebuild that has nothing to do)."""
    if not any((root / ("connection" + suffix)).exists()
               for suffix in importlib.machinery.EXTENSION_SUFFIXES):
        return "absent"
    try:
        stamp = (root / BUILD_STAMP.name).read_text().strip()
    except OSError:
        stamp = ""
    return "current" if stamp == source_hash(root) else "stale"


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds this package's submodules as .py sources, passing over extension modules."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(__name__ + ".") or path is None:
            return None
        for entry in path:
            finder = importlib.machinery.FileFinder(
                entry, (importlib.machinery.SourceFileLoader,
                        importlib.machinery.SOURCE_SUFFIXES))
            spec = finder.find_spec(fullname)
            if spec is not None:
                return spec
        return None


def choose(root: Path, environ: Mapping[str, str]) -> tuple[str, str]:
    """(CORE, CORE_REASON) for the package at ``root``: see the module docstring."""
    pure = environ.get(PURE_ENV, "")
    if pure not in ("", "0"):
        return "pure", f"{PURE_ENV}={pure}"
    state = compiled_state(root)
    if state == "absent":
        return "pure", "not compiled (built without mypyc)"
    if state == "stale":
        logging.getLogger("aioxdp").warning(
            "aioxdp: the compiled TCP core is older than its sources: using the pure-Python "
            "core; rebuild with `make` or `python setup.py build_ext --inplace`")
        return "pure", "compiled modules are older than the sources"
    return "compiled", "mypyc"


CORE, CORE_REASON = (choose(HERE, os.environ) if __name__ == "aioxdp.tcp"
                     else ("pure", "loaded by the build"))
if CORE == "pure" and __name__ == "aioxdp.tcp":  # (setup.py loads this file under another name)
    sys.meta_path.insert(0, _SourcesFirst())
