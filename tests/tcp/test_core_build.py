"""Which build of the TCP core runs (aioxdp/tcp/__init__.py): the compiled one only when
it was compiled from the sources that are there now, the pure one on request."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aioxdp.tcp as core
from aioxdp.tcp import choose, source_hash

ROOT = Path(core.__file__).resolve().parent
SO = importlib.machinery.EXTENSION_SUFFIXES[0]


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A copy of the core's sources with a (fake) compiled module and a current stamp."""
    root = tmp_path / "tcp"
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns("*.so", "*.stamp", "__pycache__"))
    (root / ("connection" + SO)).write_bytes(b"")
    (root / "_compiled.stamp").write_text(source_hash(root) + "\n")
    return root


def test_current_compiled_core_is_used(package: Path) -> None:
    assert choose(package, {}) == ("compiled", "mypyc")


def test_pure_on_request(package: Path) -> None:
    assert choose(package, {"AIOXDP_PURE": "1"}) == ("pure", "AIOXDP_PURE=1")
    assert choose(package, {"AIOXDP_PURE": "0"})[0] == "compiled"


def test_edited_source_makes_the_compiled_core_stale(package: Path) -> None:
    with (package / "connection.py").open("a") as f:
        f.write("\n# an edit after the build\n")
    assert choose(package, {}) == ("pure", "compiled modules are older than the sources")


def test_added_module_makes_the_compiled_core_stale(package: Path) -> None:
    (package / "new_module.py").write_text("X = 1\n")
    assert choose(package, {})[0] == "pure"


def test_no_extension_modules_means_pure(package: Path) -> None:
    (package / ("connection" + SO)).unlink()
    assert choose(package, {}) == ("pure", "not compiled (built without mypyc)")


def test_this_run_uses_the_core_it_expects() -> None:
    """make test runs the suite with AIOXDP_EXPECT_CORE set (compiled, then the sans-IO
    tests pure): a build that silently fell back fails here."""
    expected = os.environ.get("AIOXDP_EXPECT_CORE")
    if expected is None:
        pytest.skip("AIOXDP_EXPECT_CORE not set (make test sets it)")
    assert expected == core.CORE, core.CORE_REASON


def test_pure_core_loads_sources_even_beside_extension_modules() -> None:
    code = ("import aioxdp.tcp as t, aioxdp.tcp.connection as c, aioxdp.tcp.congestion.cubic as k;"
            "print(t.CORE, c.__file__.endswith('.py'), k.__file__.endswith('.py'))")
    env = {**os.environ, "AIOXDP_PURE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["pure", "True", "True"]
