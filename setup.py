"""Build steps that setuptools cannot express declaratively.

Three native artefacts ship inside the package:
- the cffi API-mode extension ``aioxdp._xsk._xsk`` (``cffi_modules``), compiled
  against Debian's libxdp and libbpf;
- the XDP/tc programs in ``bpf/*.bpf.c``, compiled with clang to BPF objects
  that land in ``aioxdp/bpf/`` and are loaded at run time by libbpf;
- the TCP core ``aioxdp/tcp/`` compiled by mypyc (plain typed Python in, one C
  extension per module out; 2-4x faster per segment), beside a stamp with the
  hash of the sources it came from, so that a later edit of a source makes
  the core fall back to pure Python instead of running stale code
  (``aioxdp/tcp/__init__.py``). Without mypyc, or with ``AIOXDP_PURE=1``, the
  core stays pure Python, said in one line.

A missing tool or library stops the build with one line naming the Debian
package to install, instead of a compiler traceback.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
CORE = HERE / "aioxdp" / "tcp"

# header or tool -> Debian package that provides it
REQUIREMENTS = {
    "clang": "clang",
    "llvm-strip": "llvm",
    "/usr/include/bpf/libbpf.h": "libbpf-dev",
    "/usr/include/xdp/xsk.h": "libxdp-dev",
}


def check_requirements() -> None:
    missing = []
    for what, package in REQUIREMENTS.items():
        found = Path(what).exists() if what.startswith("/") else shutil.which(what)
        if not found:
            missing.append(package)
    if missing:
        sys.exit(
            "aioxdp: cannot build: missing Debian package(s): "
            + " ".join(sorted(set(missing)))
            + "\n  install with: apt-get install -y " + " ".join(sorted(set(missing)))
        )


def multiarch_include() -> str:
    """Debian keeps asm/types.h under /usr/include/<triplet>; BPF builds need it."""
    try:
        triplet = subprocess.run(
            ["gcc", "-dumpmachine"], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        triplet = os.uname().machine + "-linux-gnu"
    return f"/usr/include/{triplet}"


def compile_bpf(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for src in sorted((HERE / "bpf").glob("*.bpf.c")):
        obj = out_dir / (src.name[: -len(".c")] + ".o")
        deps = [src, *(HERE / "bpf").glob("*.h")]
        if obj.exists() and all(obj.stat().st_mtime >= d.stat().st_mtime for d in deps):
            continue
        cmd = [
            "clang", "-O2", "-g", "-Wall", "-target", "bpf",
            "-I", str(HERE / "bpf"), "-I", multiarch_include(),
            "-c", str(src), "-o", str(obj),
        ]
        print(" ".join(cmd))
        subprocess.run(cmd, check=True)


def core_stamp() -> object:
    """aioxdp/tcp/__init__.py (sources(), source_hash(), BUILD_STAMP), loaded by path:
    importing the package would need the extensions this build makes."""
    spec = importlib.util.spec_from_file_location("_aioxdp_core_stamp", CORE / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def core_extensions(stamp: object) -> list:
    """The mypyc extensions of the TCP core; none (one line says why) without mypyc or
    with AIOXDP_PURE=1, and none for an in-place build whose compiled core is current."""
    pure = os.environ.get("AIOXDP_PURE", "")
    if pure not in ("", "0"):
        print(f"aioxdp: AIOXDP_PURE={pure}: the TCP core stays pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("aioxdp: mypyc (pip package mypy) not found: the TCP core stays pure Python")
        return []
    if "--inplace" in sys.argv and stamp.compiled_state(CORE) == "current":
        return []  # scripts/setup.sh's incremental rebuild: nothing changed
    paths = [str(path.relative_to(HERE)) for path in stamp.sources()]
    # mypy also reads the package around the core (aioxdp/__init__.py and what it
    # imports) but compiles none of it: its errors there, e.g. for optional packages
    # not installed yet while pip builds, are not the core's and must not stop the build
    return mypycify(["--follow-imports=silent", *paths], opt_level="3",
                    group_name="aioxdp.tcp._core")


STAMP = core_stamp()
SOURCE_HASH = STAMP.source_hash()
CORE_EXTENSIONS = core_extensions(STAMP)


class BuildExt(build_ext):
    """Compile the BPF objects next to the cffi extension, in place for editable installs,
    and stamp a compiled core with the hash of its sources."""

    def run(self) -> None:
        check_requirements()
        root = HERE if self.inplace else Path(self.build_lib)
        compile_bpf(root / "aioxdp" / "bpf")
        super().run()
        if CORE_EXTENSIONS:
            (root / STAMP.BUILD_STAMP.relative_to(HERE)).write_text(SOURCE_HASH + "\n")


setup(
    cffi_modules=["aioxdp/_xsk/build.py:ffibuilder"],
    ext_modules=CORE_EXTENSIONS,
    cmdclass={"build_ext": BuildExt},
)
