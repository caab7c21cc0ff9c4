"""Build steps that setuptools cannot express declaratively.

Two native artefacts ship inside the package:
- the cffi API-mode extension ``aioxdp._xsk._xsk`` (``cffi_modules``), compiled
  against Debian's libxdp and libbpf;
- the XDP/tc programs in ``bpf/*.bpf.c``, compiled with clang to BPF objects
  that land in ``aioxdp/bpf/`` and are loaded at run time by libbpf.

A missing tool or library stops the build with one line naming the Debian
package to install, instead of a compiler traceback.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent

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


class BuildExt(build_ext):
    """Compile the BPF objects next to the cffi extension, in place for editable installs."""

    def run(self) -> None:
        check_requirements()
        target = HERE / "aioxdp" / "bpf" if self.inplace else Path(self.build_lib) / "aioxdp" / "bpf"
        compile_bpf(target)
        super().run()


setup(
    cffi_modules=["aioxdp/_xsk/build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExt},
)
